-- rows.lua - single-row lookups: GET /v1/tables/{table}/rows/{id}, id uniform in [0, rows).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 8192
function build(rows, dim, tbl)
   return wrk.format("GET", "/v1/tables/" .. tbl .. "/rows/" .. math.random(0, rows - 1))
end
