-- wobbly: misbehaves on purpose, to show that a plug-in cannot take the
-- tool down. It passes a line through unchanged, except (in any case):
--   a line containing "forever" loops forever (the call times out and
--   its worker is replaced);
--   a line containing "hog" allocates without bound (the call fails past
--   the memory limit);
--   a line containing "boom" raises an error.
return {
  line = function(text)
    local t = text:lower()
    if t:find("forever", 1, true) then
      while true do end
    elseif t:find("hog", 1, true) then
      local hoard = {}
      while true do hoard[#hoard + 1] = string.rep("x", 1 << 20) .. #hoard end   -- a MiB a step
    elseif t:find("boom", 1, true) then
      error("boom on purpose")
    end
    return text
  end,
}
