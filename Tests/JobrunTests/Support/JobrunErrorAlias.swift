import Jobrun

/// This target imports both Jobrun and JobrunCore, each with a type named
/// JobrunError; the tests mean the library's public one (what a host sees)
/// unless they write `JobrunCore.JobrunError`.
typealias JobrunError = Jobrun.JobrunError
