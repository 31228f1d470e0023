-- A Pool map over a data file: factor each number of data/numbers.txt and
-- count its Collatz steps, in parallel, with the results printed in input
-- order (Pool:map keeps the order whatever worker finished first).
--
--   jobrun examples/pool_map.lua [file] [workers]
--
-- `file` defaults to data/numbers.txt beside this script, `workers` to
-- jobrun.cpu_count(); the output is the same for any number of workers.
--
-- The pool's `init` runs once in every worker when it starts: here it sieves
-- the primes below 50000 into a global, which the task function then reads
-- (a function sent to a worker resolves its globals there). With Python's
-- Pool(initializer=...) this is how per-worker setup is done.

local here = arg[0]:match("^(.*)/[^/]*$") or "."
local path = (arg[1] or "") ~= "" and arg[1] or (here .. "/data/numbers.txt")
local workers = tonumber(arg[2] or "") or jobrun.cpu_count()

--- Runs once per worker: PRIMES = the primes below `limit`.
local function sieve(limit)
  local composite, primes = {}, {}
  for i = 2, limit do
    if not composite[i] then
      primes[#primes + 1] = i
      for j = i * i, limit, i do composite[j] = true end
    end
  end
  PRIMES = primes
end

--- The task: one line of the file in, one table of facts out.
local function examine(n)
  local factors, rest = {}, n
  local function take(p)
    local k = 0
    while rest % p == 0 do rest = rest // p; k = k + 1 end
    if k > 0 then factors[#factors + 1] = k > 1 and (p .. "^" .. k) or tostring(p) end
  end
  for _, p in ipairs(PRIMES) do
    if p * p > rest then break end
    take(p)
  end
  -- Beyond the sieve, trial division by odd numbers (slow on purpose: work).
  local d = PRIMES[#PRIMES] + 2
  while d * d <= rest do take(d); d = d + 2 end
  if rest > 1 then factors[#factors + 1] = tostring(rest) end

  local steps, x = 0, n
  while x ~= 1 do
    if x % 2 == 0 then x = x // 2 else x = 3 * x + 1 end
    steps = steps + 1
  end
  return {n = n, factors = table.concat(factors, " * "), prime = #factors == 1 and factors[1] == tostring(n),
          steps = steps}
end

local numbers = {}
for line in io.lines(path) do
  local s = line:match("^%s*(.-)%s*$")
  if s ~= "" and not s:match("^#") then
    numbers[#numbers + 1] = math.tointeger(tonumber(s)) or error(("%s: not an integer: %q"):format(path, s))
  end
end

local pool = jobrun.Pool{workers = workers, init = sieve, init_args = {50000}}
local results = pool:map(examine, numbers)
pool:close()
pool:join()

local primes, longest = 0, results[1]
for _, r in ipairs(results) do
  print(("%20d = %-34s %s collatz %d"):format(r.n, r.factors, r.prime and "prime" or "     ", r.steps))
  if r.prime then primes = primes + 1 end
  if r.steps > longest.steps then longest = r end
end
print(("%d numbers, %d primes; the longest Collatz trajectory starts at %d (%d steps)")
      :format(#results, primes, longest.n, longest.steps))
