-- `jobrun map [options] FN.lua [INPUT...]` (the command: Sources/jobrun/Map.swift,
-- which has checked the options and that every file named can be read). Run
-- as the main chunk of an ordinary run (Host.Options.driver), so the status
-- line, --stats, --stats-json, Ctrl-C and the exit status are any run's.
-- `...` is "key=value" settings, "--", FN.lua, then the inputs.
--
-- FN.lua runs once, here, before the Pool forks its workers: they inherit
-- its function with its upvalues (open files, loaded modules), so only a
-- small stub is sent with each chunk of lines. In a worker, the stub calls
-- the function with what it prints to stdout captured, and turns the
-- result and the captured text into the line(s) to print (--tag applied);
-- the caller only writes them, whole, so output never tears and, with
-- --keep-order, what a function prints keeps its place too.
--
-- Failures: without --retries/--timeout/--halt/--joblog/--resume the stub
-- catches an error itself and sends it back as a failure (nothing for the
-- Pool to do). With any of them, the error is raised to the Pool, which
-- retries, times out, logs and halts (CONTRACT-15's Pool options), and
-- reports each failure for good through `on_error`.
local settings = {...}
local o, at = {}, nil
for i, a in ipairs(settings) do
  if a == "--" then at = i; break end
  local k, v = a:match("^([%w_]+)=(.*)$")
  if k then o[k] = v end
end
local fn_path = settings[at + 1]
local inputs = table.move(settings, at + 2, #settings, 1, {})
if #inputs == 0 then inputs[1] = "-" end

local stdout, stderr = io.stdout, io.stderr
local describe = jobrun._describe
local type, tostring, select, concat, mtype, format = type, tostring, select, table.concat, math.type, string.format

local pipe, tag, keep_order = o.pipe == "1", o.tag == "1", o.keep_order == "1"
local block_size = tonumber(o.block)
local control = o.retries or o.timeout or o.halt or o.joblog or o.resume

--- The run's last words for bad input: one line, exit 2.
local function refuse(message)
  stdout:flush()
  stderr:write("jobrun map: ", message, "\n")
  os.exit(2)
end

--- A short copy of an item for messages: at most 40 bytes shown, control
--- bytes, quotes and backslashes escaped, invalid UTF-8 as \xNN.
local function short(s)
  local cut = #s > 40
  if cut then
    s = s:sub(1, 40)
    -- do not end inside a UTF-8 sequence
    local k = #s
    while k > 0 and s:byte(k) >= 0x80 and s:byte(k) < 0xC0 do k = k - 1 end
    if k > 0 and s:byte(k) >= 0xC0 then s = s:sub(1, k - 1) end
  end
  local out, pos = {}, 1
  while pos <= #s do
    local len = utf8.len(s, pos)
    local stop = len and #s or select(2, utf8.len(s, pos)) - 1
    if stop >= pos then
      out[#out + 1] = s:sub(pos, stop):gsub("[%c'\\]", function(c)
        if c == "\t" then return "\\t" elseif c == "\n" then return "\\n" elseif c == "\r" then return "\\r"
        elseif c == "'" or c == "\\" then return "\\" .. c end
        return format("\\x%02X", c:byte())
      end)
    end
    if len then break end
    out[#out + 1] = format("\\x%02X", s:byte(stop + 1))
    pos = stop + 2
  end
  return "'" .. concat(out) .. (cut and "'..." or "'")
end

-- What the function prints, captured in the worker -----------------------------------
--
-- print, io.write and :write on io.stdout (and io.output() while it is
-- stdout) go to `cap` during a call; elsewhere, and in this process, they
-- go where they went before (output.lua's wrappers when they are on).
-- Output of child processes (os.execute, io.popen) is not captured.
-- Installed before FN.lua runs, so a `local print = print` there is
-- captured too.

local cap, ncap, capturing = {}, 0, false
local methods = getmetatable(stdout).__index
local write_through, print_through = methods.write, print

methods.write = function(f, ...)
  if not capturing or f ~= stdout then return write_through(f, ...) end
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if t == "number" then
      v = mtype(v) == "integer" and format("%d", v) or format("%.14g", v)
    elseif t ~= "string" then
      error(("bad argument #%d to 'write' (string expected, got %s)"):format(i, t), 2)
    end
    ncap = ncap + 1
    cap[ncap] = v
  end
  return f
end
io.write = function(...) return io.output():write(...) end
print = function(...)
  if not capturing then return print_through(...) end
  local n = select("#", ...)
  for i = 1, n do
    ncap = ncap + 1
    cap[ncap] = tostring((select(i, ...)))
    if i < n then ncap = ncap + 1; cap[ncap] = "\t" end
  end
  ncap = ncap + 1
  cap[ncap] = "\n"
end

-- The function ----------------------------------------------------------------------

arg = {[0] = fn_path, table.unpack(inputs)}
local chunk, why = loadfile(fn_path)
if not chunk then
  if not why:find(fn_path, 1, true) then why = fn_path .. ": " .. why end
  refuse(why)
end
local ok, user_fn = pcall(chunk)
if not ok then
  refuse(("%s raised an error while loading: %s"):format(fn_path, describe(user_fn)))
end
local mt = getmetatable(user_fn)
if type(user_fn) ~= "function" and not (type(user_fn) == "table" and type(mt) == "table" and mt.__call) then
  refuse(("%s must return a function (it returned %s): end it with `return function(line) ... end`")
         :format(fn_path, user_fn == nil and "nothing" or ("a " .. type(user_fn))))
end

--- A value the function returned, appended to `parts` as line(s).
local function add(parts, v, item, top)
  local t = type(v)
  if t == "string" then
    parts[#parts + 1] = v
    if v:byte(-1) ~= 10 then parts[#parts + 1] = "\n" end
  elseif t == "number" then
    parts[#parts + 1] = tostring(v) .. "\n"
  elseif top and v == true then
    return add(parts, item)
  elseif top and t == "table" and getmetatable(v) == nil then
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    if count ~= n then
      error("the function returned a table that is not a list (of strings and numbers, printed one a line)", 0)
    end
    for i = 1, n do
      local x = v[i]
      if type(x) ~= "string" and type(x) ~= "number" then
        error(("the function returned a list whose item %d is a %s (a list holds strings and numbers, one a line)")
              :format(i, type(x)), 0)
      end
      add(parts, x)
    end
  elseif not (top and (v == nil or v == false)) then
    error(("the function returned a %s: return a string or number (a line), a list of them, "
           .. "true (print the input line), or false or nil (print nothing)"):format(t), 0)
  end
end

--- The text to print for one item: what the call printed, then its result,
--- each line tagged with `label` when --tag is on; nil when there is none.
local function render(item, label, r)
  local parts = {}
  if ncap > 0 then
    local text = concat(cap, "", 1, ncap)
    cap, ncap = {}, 0
    parts[1] = text
    if text:byte(-1) ~= 10 then parts[2] = "\n" end
  end
  add(parts, r, item, true)
  if parts[1] == nil then return nil end
  local text = concat(parts)
  if tag then
    local lead = label .. "\t"
    text = text:gsub("[^\n]*\n", function(line) return lead .. line end)
  end
  return text
end

--- One item in a worker: the text to print without its last newline (the
--- caller adds it), or nil. A failure raises (for the Pool: control mode)
--- or comes back as {message, short copy}. With --pipe --tag the block's
--- number rides in front of it ("17\n..."), taken off here.
---
--- The common case (a string returned, nothing printed, no --tag) costs one
--- protected call and no new string unless the result ends with a newline:
--- per line this is most of what a worker does beyond the function itself.
local BYTE_NEWLINE, sbyte = 10, string.byte
local function run_item(item)
  local label
  if tag then
    if pipe then label, item = item:match("^(%d+)\n(.*)$") else label = item end
  end
  capturing = true
  local ok, r = pcall(user_fn, item)
  capturing = false
  if ok and ncap == 0 and not tag and type(r) == "string" then
    if sbyte(r, -1) ~= BYTE_NEWLINE then return r end
    return r:sub(1, -2)
  end
  if ok then ok, r = pcall(render, item, label, r) end
  if ok then return r and r:sub(1, -2) end
  cap, ncap = {}, 0
  if control then error(r, 0) end
  return {describe(r), not pipe and "(" .. short(item) .. ")" or nil}
end

jobrun._map_call = run_item
-- What the Pool sends with each chunk: a call of the function the worker
-- already has. Made per function file (its name in the chunk name and as a
-- constant), so a job log's fingerprint of the function (--resume) tells
-- one FN.lua from another, while editing the file between runs (to fix
-- what failed) still resumes.
-- (Named after the file alone, so the log's header and a refused resume
-- say "count.lua:1", not jobrun's; a stripped dump, the fingerprint, keeps
-- the line a function is defined at but no names: keep it at line 1.)
local fn_name = fn_path:match("[^/]*$")
local stub = assert(load(("return function(item) return jobrun._map_call(item, %q) end"):format(fn_name),
                         "=" .. fn_name, "t"))()

-- The input -----------------------------------------------------------------------
--
-- Lines (or blocks) of the inputs in order, read as the Pool asks for them.
-- `starts` says where each input's items start, so a message can name the
-- file and its line: {first item, name, first line}.

local starts, read_error = {}, nil
local count, lines_read = 0, 0
local cur, cur_name, next_input = nil, nil, 1

local function open_next()
  if next_input > #inputs then return false end
  local name = inputs[next_input]
  next_input = next_input + 1
  if name == "-" then
    cur, cur_name = io.stdin, "stdin"
  else
    local f, err = io.open(name, "rb")
    if not f then read_error = err; return false end
    cur, cur_name = f, name
  end
  starts[#starts + 1] = {count + 1, cur_name, lines_read + 1}
  return true
end

local function close_current()
  if cur ~= io.stdin then cur:close() end
  cur = nil
end

local input_ended = false
local pending = false                  -- results written to stdout's buffer since its last flush
local function flush()
  pending = false
  stdout:flush()
end
jobrun._before_wait = flush            -- (pool.lua: before it sleeps for results)
local input_ready, NOT_YET = jobrun._input_ready, jobrun._not_yet

--- true when `cur` (opened here when need be) can be read without sleeping;
--- else nil at the end of the input, or NOT_YET when a pipe has nothing in
--- it yet (what is buffered for stdout goes out first: the Pool looks again).
local function can_read()
  if cur == nil and (read_error or not open_next()) then input_ended = true; return nil end
  if input_ready(cur) then return true end
  if pending then flush() end
  return NOT_YET
end

local function next_line()
  while true do
    local ready = can_read()
    if ready ~= true then return ready end
    local line, err = cur:read("l")
    if line then
      count = count + 1
      return line
    end
    if err then read_error = cur_name .. ": " .. err end
    close_current()
  end
end

-- Blocks: about block_size bytes, ending at a line end (a longer line is
-- read whole); never across inputs. block_lines[k]: the first input line of
-- block k and how many it holds, for messages (dropped once reported).
local carry = ""
local block_lines = {}
local BYTE_NL = 10

local function count_lines(s)
  local n, pos = 0, 1
  while true do
    local nl = s:find("\n", pos, true)
    if not nl then break end
    n, pos = n + 1, nl + 1
  end
  if pos <= #s then n = n + 1 end
  return n
end

local function next_block()
  while true do
    local ready = can_read()
    if ready ~= true then return ready end
    local parts, have = {carry}, #carry
    local seen_nl = carry:find("\n", 1, true) ~= nil
    carry = ""
    local ended = false
    while true do
      -- Up to the block's size; past it (a line longer than a block), on in
      -- pieces until a line ends.
      local want = block_size - have
      if want <= 0 then want = math.min(block_size, 65536) end
      if pending then flush() end
      local data, err = cur:read(want)
      if data == nil then
        if err then read_error = cur_name .. ": " .. err end
        ended = true
        break
      end
      parts[#parts + 1] = data
      have = have + #data
      seen_nl = seen_nl or data:find("\n", 1, true) ~= nil
      if have >= block_size and seen_nl then break end
    end
    local buf = concat(parts)
    if ended then close_current() end
    if #buf > 0 then
      local cut = #buf
      if not ended then
        while buf:byte(cut) ~= BYTE_NL do cut = cut - 1 end
        carry = buf:sub(cut + 1)
        buf = buf:sub(1, cut)
      end
      count = count + 1
      local n = count_lines(buf)
      block_lines[count] = {lines_read + 1, n}
      lines_read = lines_read + n
      if tag then return count .. "\n" .. buf end
      return buf
    end
  end
end

--- Where item k came from, for messages: "data.txt:17" or "stdin: block 3
--- (lines 201-300)".
local function where(k)
  local s
  for i = #starts, 1, -1 do
    if starts[i][1] <= k then s = starts[i]; break end
  end
  if not s then return ("item %d"):format(k) end
  if not pipe then return ("%s:%d"):format(s[2], k - s[1] + 1) end
  local b = block_lines[k]
  block_lines[k] = nil
  if not b then return ("%s: block %d"):format(s[2], k) end
  local first = b[1] - s[3] + 1
  return ("%s: block %d (line%s %d%s)"):format(s[2], k, b[2] == 1 and "" or "s", first,
                                                b[2] == 1 and "" or "-" .. (first + b[2] - 1))
end

-- The run --------------------------------------------------------------------------

local failures, done = 0, 0
local what = pipe and "blocks" or "lines"

--- The message of an error without the worker's traceback.
local function message_of(e)
  local text = type(e) == "string" and e or describe(e)
  return (text:gsub("\nstack traceback.*$", ""))
end

--- A jobrun error's own message (no kind, no "Pool.imap: "), for the
--- run's last words (a halt, a job log refused): the Pool behind the
--- command is "jobrun map" there, as it is to the user.
local function text_of(e)
  if type(e) == "table" and e.kind and e.message ~= nil then
    return (message_of(tostring(e.message)):gsub("^Pool%.[%w_]+: ", ""):gsub("Pool%.imap[%w_]*", "jobrun map"))
  end
  return message_of(e)
end

--- A failed line's message: the Pool's words for where the item was
--- ("Pool.imap: item 3 ('x'): timed out...") are the line's place, which
--- the report says already, in the user's terms.
local function line_message(e)
  if type(e) == "table" and e.kind and type(e.message) == "string" and e.message:find("^Pool%.[%w_]+: ") then
    local m = message_of(e.message):gsub("^Pool%.[%w_]+: ", ""):gsub("^item %d+ %b(): ", "")
    return "jobrun." .. e.kind .. ": " .. m
  end
  -- A worker's death: "... exited with status 3 while running imap item 3
  -- of 5" names the Pool's item, which the report's place says as a line;
  -- of a chunk ("items 3..5"), the lines that went with it.
  local m = message_of(e)
  return (m:gsub(" while running imap[%w_]* items? (%d+)%.?%.?(%d*) of [%w ]+$", function(a, b)
    if b == "" then return "" end
    return (" while running the lines %s to %s"):format(where(tonumber(a)), where(tonumber(b)))
  end))
end

local function report(k, item_copy, message)
  failures = failures + 1
  local place = k and where(k) or nil
  local head = place and (item_copy and place .. " " .. item_copy or place) or nil
  stdout:flush()
  stderr:write("jobrun map: ", head and head .. ": " or "", message, "\n")
end

local opts = {}
if pipe then opts.chunksize = 1 end
if control then
  opts.retries = o.retries and math.tointeger(tonumber(o.retries)) or nil
  opts.timeout = o.timeout and tonumber(o.timeout) or nil
  opts.halt = o.halt
  opts.joblog = o.joblog
  opts.resume = o.resume == "1" or nil
  opts.on_error = function(err, index, item)
    local copy
    if not pipe and type(item) == "string" then copy = "(" .. short(item) .. ")" end
    report(index, copy, line_message(err))
    done = done + 1                              -- (the iterator skips a failed item)
  end
end

local jobs = tonumber(o.jobs)
local okp, pool = pcall(jobrun.Pool, {workers = jobs ~= 0 and jobs or nil})
if not okp then refuse(("-j %s: %s"):format(o.jobs, message_of(pool))) end

local source = pipe and next_block or next_line
local start_ok, it = pcall(keep_order and pool.imap or pool.imap_unordered, pool, stub, source, opts)
if not start_ok then
  pool:terminate()
  local m = text_of(it)
  if m:match("unknown option ([%w_]+)") then
    local given = {}
    for _, k in ipairs{"retries", "timeout", "halt", "joblog", "resume"} do
      if o[k] then given[#given + 1] = "--" .. k end
    end
    m = concat(given, ", ") .. ": this jobrun's Pool does not take the per-line control options"
        .. " (timeout, retries, halt, on_error, joblog, resume)"
  end
  refuse(m)
end

-- Output: the main process is stdout's only writer here (the workers'
-- output comes back as results), so stdout is fully buffered, not a
-- write(2) a line. It is flushed whenever this process may wait: before a
-- read of the input (next_line, next_block: `tail -f | jobrun map` shows each
-- result as soon as it is in), before the Pool sleeps for results
-- (jobrun._before_wait), before a message on stderr, and at the end. Ctrl-C
-- and SIGTERM write out the complete lines still buffered (interrupt.c).
stdout:setvbuf("full")
local raw_write = write_through
local progress = jobrun.progress
local halted
local expected = 0

--- The results until the iterator ends (true) or raises (false, the error).
--- One protected call for the whole run, not one a result.
local here_src = debug.getinfo(1, "S").short_src
local function take()
  while true do
    expected = expected + 1
    local v, k = it()
    if k == nil then return end
    if v ~= nil then
      if type(v) == "string" then
        raw_write(stdout, v, "\n")
        pending = true
      else
        report(k, v[2], v[1])
      end
    end
    done = done + 1
    if done % 64 == 0 then progress(what, done, input_ended and count or nil) end
  end
end

while true do
  local okr, e = pcall(take)
  if okr then break end
  if type(e) == "table" and e.kind == "Halted" then halted = e; break end
  -- With on_error (control mode) every failed item goes there: what the
  -- iterator raises is the run's end (a job log from another job, a
  -- corrupt one). Without, the Pool could not run an item (its worker
  -- died): in order, it is item `expected`; out of order, the Pool's
  -- message names it.
  if control then
    pool:terminate()
    refuse(text_of(e))
  end
  -- (the Pool names the place of the step that raised: take(), here)
  local m = message_of(e):gsub("^" .. here_src:gsub("%p", "%%%0") .. ":%d+: ", "")
  report(keep_order and expected or math.tointeger(tonumber(m:match(" item (%d+) of "))), nil, line_message(m))
  done = done + 1
  if done % 64 == 0 then progress(what, done, input_ended and count or nil) end
end
progress(what, done, done)

if halted then
  pool:terminate()
  stdout:flush()
  stderr:write("jobrun map: ", text_of(halted), "\n")
else
  pool:close()
  pool:join()
end
stdout:flush()
if read_error then refuse(read_error .. " (the lines before it were run)") end
os.exit(failures > 101 and 101 or failures)
