-- static.lua - nginx's static file: GET /row.json, a file of the size of a single-row lookup
-- response (the ceiling of HTTP serving on this machine, with the same wrk settings).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 1
function build(rows, dim, tbl)
   return wrk.format("GET", "/row.json")
end
