-- rows_paced.lua - single-row lookups (as rows.lua) at a fixed total rate: RATE requests/s
-- over all wrk threads (script arguments: TABLE ROWS DIM RATE WRK_THREADS). run.sh sets RATE to
-- half the single-row saturation rate it has just measured. How the pacing works: common.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 8192
function build(rows, dim, tbl)
   return wrk.format("GET", "/v1/tables/" .. tbl .. "/rows/" .. math.random(0, rows - 1))
end
enable_pacing()
