-- keys.lua - lookups by key: GET /v1/tables/{table}/keys/item{N}, N uniform in [0, rows)
-- (the generated table's keys are item0, item1, ...).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 8192
function build(rows, dim, tbl)
   return wrk.format("GET", "/v1/tables/" .. tbl .. "/keys/item" .. math.random(0, rows - 1))
end
