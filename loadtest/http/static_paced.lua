-- static_paced.lua - nginx's static file (as static.lua) at the same fixed rate as rows_paced.lua:
-- the latency floor of this machine and client at that rate. How the pacing works: common.lua.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 1
function build(rows, dim, tbl)
   return wrk.format("GET", "/row.json")
end
enable_pacing()
