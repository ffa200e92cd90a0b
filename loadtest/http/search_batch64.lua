-- search_batch64.lua - batch search: POST /v1/tables/{table}/search {"vectors": [64 vectors],
-- "k": 10}, random standard-normal vectors as JSON; one answer list per vector.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 8
function build(rows, dim, tbl)
   local v = {}
   for i = 1, 64 do v[i] = random_vector_json(dim) end
   local body = '{"vectors":[' .. table.concat(v, ",") .. '],"k":10}'
   return wrk.format("POST", "/v1/tables/" .. tbl .. "/search", JSON_HEADERS, body)
end
