-- common.lua - shared by the scenario scripts (loaded with dofile; not a scenario itself).
--
-- Every scenario is run as
--   wrk -t T -c C -d D --latency -s SCENARIO.lua URL -- TABLE ROWS DIM [RATE]
-- and defines build(rows, dim, table) returning one request string (wrk.format). Each wrk
-- thread prebuilds a pool of such requests in init() from its own seed, so the per-request
-- Lua work is one table index (the client stays cheap) while ids and vectors stay random.

local threads_seen = 0

function setup(thread)
   threads_seen = threads_seen + 1
   thread:set("tid", threads_seen)
end

local pool, npool, next_i = {}, 0, 0
POOL_SIZE = POOL_SIZE or 4096

-- A random vector of dim numbers as JSON text (standard normal; Box-Muller).
function random_vector_json(dim)
   local t = {}
   for j = 1, dim do
      local u1, u2 = math.random(), math.random()
      if u1 < 1e-12 then u1 = 1e-12 end
      t[j] = string.format("%.6g", math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2))
   end
   return "[" .. table.concat(t, ",") .. "]"
end

-- n distinct-ish random ids in [0, rows) as a JSON array.
function random_ids_json(n, rows)
   local t = {}
   for j = 1, n do t[j] = tostring(math.random(0, rows - 1)) end
   return "[" .. table.concat(t, ",") .. "]"
end

JSON_HEADERS = { ["Content-Type"] = "application/json" }

function init(args)
   local tbl = args[1] or "t"
   local rows = tonumber(args[2] or "100000")
   local dim = tonumber(args[3] or "128")
   math.randomseed(7919 * (tid or 1) + 17)
   for i = 1, POOL_SIZE do pool[i] = build(rows, dim, tbl) end
   npool = POOL_SIZE
   if init_extra then init_extra(args) end
end

function request()
   next_i = next_i + 1
   if next_i > npool then next_i = 1 end
   return pool[next_i]
end

-- Pacing (rows_paced.lua, static_paced.lua): a fixed total rate of RATE requests/s over all
-- wrk threads (script arguments 4 and 5: RATE and the wrk thread count).
--
-- wrk has no rate limiter; its delay() hook is called before each request and returns how
-- many milliseconds that connection waits before sending. Each wrk thread keeps a schedule of
-- send slots spaced 1/(RATE/threads) apart and gives every request the next free slot, so the
-- thread sends at the target rate whatever the response times, as long as some of its
-- connections are idle. A slot that has already passed is not caught up, so a server (or a
-- client) that cannot keep up shows as an achieved rate below the target. wrk truncates the
-- delay to whole milliseconds, so a request may leave up to 1 ms before its slot; the average
-- rate is unaffected. wrk starts its latency clock when the request is written, after the
-- delay, so latencies exclude the pacing wait.
function enable_pacing()
   local ffi = require("ffi")
   ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } lt_timespec;
   int clock_gettime(int clk, lt_timespec *ts);
   ]]
   local ts = ffi.new("lt_timespec")
   local function now_ms()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
   end
   local period_ms, next_slot
   function init_extra(args)
      local rate = tonumber(args[4] or "1000")
      local nthreads = tonumber(args[5] or "1")
      period_ms = 1000 * nthreads / rate
   end
   function delay()
      local t = now_ms()
      local slot = next_slot or t
      if slot < t then slot = t end
      next_slot = slot + period_ms
      return slot - t
   end
end
