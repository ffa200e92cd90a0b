-- search1.lua - one query per request: POST /v1/tables/{table}/search {"vector": [dim numbers],
-- "k": 10}, a random standard-normal vector as JSON (two-stage search on f16+q1 stores).
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 256
function build(rows, dim, tbl)
   local body = '{"vector":' .. random_vector_json(dim) .. ',"k":10}'
   return wrk.format("POST", "/v1/tables/" .. tbl .. "/search", JSON_HEADERS, body)
end
