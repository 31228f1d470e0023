-- upper: the line in capitals.
return {
  line = function(text) return text:upper() end,
}
