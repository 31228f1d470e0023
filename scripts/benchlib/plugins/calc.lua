-- The plug-in of the bench's plugin rows (scripts/benchlib/bench.py).
return {
  add = function(t) return t.a + t.b end,
}
