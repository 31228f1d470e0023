-- words: one line per word; a line with no words is dropped.
return {
  line = function(text)
    local words = {}
    for w in text:gmatch("%S+") do words[#words + 1] = w end
    if #words == 0 then return nil end
    return words
  end,
}
