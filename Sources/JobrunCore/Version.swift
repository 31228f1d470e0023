/// The version `jobrun --version` and `jobrun.version` report.
public let version = "0.14.0"
