-- Writes the sample logs of examples/grep_count.lua and access_report.lua:
--
--   lua5.4 examples/data/make_logs.lua      (from the package root)
--
--   data/app-logs/**.log       application logs of three services (plain text)
--   data/access/web-*.log.gz   nginx access logs of three web servers, gzipped
--
-- The logs are made up (addresses from the documentation ranges of RFC 5737)
-- and the same on every run: a linear congruential generator stands in
-- for math.random, and `gzip -n` leaves out the name and time stamp, so the
-- committed files can be checked by running this again.

local here = arg[0]:match("^(.*)/[^/]*$") or "."

local seed = 20261130
local function rand(n)           -- a whole number in 1..n (Knuth's MMIX generator; integers wrap)
  seed = seed * 6364136223846793005 + 1442695040888963407
  return (seed >> 33) % n + 1
end
local function pick(list) return list[rand(#list)] end
local function chance(percent) return rand(1000) <= percent * 10 end

--- Picks one of {{weight, ...}, ...}, each as likely as its weight.
local function weighted(choices)
  local total = 0
  for _, c in ipairs(choices) do total = total + c[1] end
  local r = rand(total)
  for _, c in ipairs(choices) do
    r = r - c[1]
    if r <= 0 then return c end
  end
end

local function write(path, text, gzip)
  os.execute(("mkdir -p '%s'"):format(path:match("^(.*)/")))
  local f = gzip and assert(io.popen(("gzip -n -9 > '%s'"):format(path), "w")) or assert(io.open(path, "w"))
  f:write(text)
  assert(f:close())
end

-- Application logs --------------------------------------------------------

local services = {
  api = {
    info = {"GET /v1/orders?customer=%d 200 %dms", "GET /v1/orders/%d 200 %dms", "POST /v1/cart/%d 201 %dms",
            "GET /v1/products?page=%d 200 %dms"},
    warn = {"slow request GET /v1/search?q=%d (%dms)", "rate limit near for client %d", "retrying upstream call for order %d"},
    error = {"upstream timeout: inventory, order %d", "GET /v1/orders/%d 502 bad gateway",
             "database pool exhausted, request %d dropped"},
  },
  billing = {
    info = {"charge ok order=%d amount=%d.99 EUR", "invoice %d sent", "refund queued order=%d"},
    warn = {"payment provider slow for order %d (%dms)", "currency rate refresh failed, batch %d"},
    error = {"charge failed order=%d: provider timeout", "ledger write failed: deadlock detected (tx %d)",
             "webhook signature mismatch, event evt_%d"},
  },
  worker = {
    info = {"job %d done in %dms: resize-image", "job %d done in %dms: send-email", "picked job %d from queue default"},
    warn = {"job %d took %ds, over its budget", "queue default backlog %d"},
    error = {"job %d failed: ENOSPC writing /tmp/render-%d.png", "job %d failed: SMTP 421 try again later"},
  },
}

--- One day of a service's log: `lines` lines, `errors`% of them errors.
local function app_log(service, day, lines, errors)
  local kinds, out = services[service], {}
  local t = 6 * 3600 + rand(600)
  for _ = 1, lines do
    t = t + rand(240)
    local level = chance(errors) and "ERROR" or chance(8) and "WARN" or chance(10) and "DEBUG" or "INFO"
    local text = level == "DEBUG" and ("cache hit ratio %d%%"):format(60 + rand(39))
                 or pick(kinds[level:lower()]):format(rand(99999), rand(900))
    out[#out + 1] = ("%s %02d:%02d:%02d.%03d %-5s [%s] %s\n")
      :format(day, t // 3600 % 24, t // 60 % 60, t % 60, rand(1000) - 1, level, service, text)
  end
  return table.concat(out)
end

write(here .. "/app-logs/api/2026-11-29.log", app_log("api", "2026-11-29", 240, 2))
write(here .. "/app-logs/api/2026-11-30.log", app_log("api", "2026-11-30", 260, 4))
write(here .. "/app-logs/billing/2026-11-29.log", app_log("billing", "2026-11-29", 150, 1))
write(here .. "/app-logs/billing/2026-11-30.log", app_log("billing", "2026-11-30", 180, 9))  -- the incident
write(here .. "/app-logs/worker/2026-11-30.log", app_log("worker", "2026-11-30", 210, 3))
write(here .. "/app-logs/worker/archive/2026-11-28.log", app_log("worker", "2026-11-28", 120, 0))

-- Access logs (nginx "combined" format) ---------------------------------------

local agents = {
  "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "curl/8.5.0",
}

-- {weight, method, path, statuses {{weight, status}}, bytes of a 200}
local requests = {
  {18, "GET", "/", {{8, 200}, {2, 304}}, 5120},
  {14, "GET", "/static/app.js", {{5, 200}, {5, 304}}, 412330},
  {10, "GET", "/static/app.css", {{5, 200}, {5, 304}}, 48210},
  {8, "GET", "/img/logo.png", {{6, 200}, {4, 304}}, 18922},
  {16, "GET", "/api/v1/orders?page=%d", {{20, 200}, {1, 500}}, 7400},
  {12, "GET", "/api/v1/orders/%d", {{16, 200}, {3, 404}, {1, 502}}, 1890},
  {6, "POST", "/api/v1/login", {{8, 200}, {3, 401}}, 310},
  {6, "GET", "/api/v1/search?q=%d", {{10, 200}, {1, 503}}, 22100},
  {6, "GET", "/healthz", {{1, 200}}, 2},
  {3, "GET", "/favicon.ico", {{1, 404}}, 0},
  {1, "GET", "/wp-login.php", {{1, 404}}, 0},
  {1, "GET", "/.env", {{1, 404}}, 0},
  {1, "GET", "/blog", {{1, 301}}, 0},
}

--- A morning of one server's log: `lines` requests from 08:00; from 11:00
--- to 11:20 on `broken` servers, the API answers 502/503.
local function access_log(lines, broken)
  local out = {}
  local t = 8 * 3600
  for i = 1, lines do
    t = t + rand(140)
    local r = weighted(requests)
    local method, path = r[2], r[3]:format(rand(4000))
    local status = weighted(r[4])[2]
    if broken and path:match("^/api/") and t >= 11 * 3600 and t < 11 * 3600 + 1200 and chance(60) then
      status = pick({502, 503})
    end
    local bytes = status == 200 and r[5] + rand(math.max(1, r[5] // 20)) or
                  status == 304 and 0 or status >= 500 and 157 + rand(40) or status == 301 and 169 or 153 + rand(30)
    local agent = path == "/healthz" and "kube-probe/1.31" or pick(agents)
    local client = path == "/healthz" and "10.0.0.2" or ("%s.%d"):format(pick({"192.0.2", "198.51.100", "203.0.113"}), rand(254))
    out[#out + 1] = ('%s - - [30/Nov/2026:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s"\n')
      :format(client, t // 3600 % 24, t // 60 % 60, t % 60, method, path, status, bytes, agent)
    if i % 150 == 75 then  -- what scanners leave in a real log: a TLS hello on the HTTP port
      out[#out + 1] = ('%s.%d - - [30/Nov/2026:%02d:%02d:%02d +0000] "\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03" 400 157 "-" "-"\n')
        :format("203.0.113", rand(254), t // 3600 % 24, t // 60 % 60, t % 60)
    end
  end
  return table.concat(out)
end

write(here .. "/access/web-1.log.gz", access_log(320, false), true)
write(here .. "/access/web-2.log.gz", access_log(300, true), true)
-- web-3's log was cut short when its disk filled: the last line is half written.
write(here .. "/access/web-3.log.gz", access_log(280, true) .. '198.51.100.7 - - [30/Nov/2026:14:0', true)
