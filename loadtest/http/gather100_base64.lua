-- gather100_base64.lua - POST /v1/tables/{table}/gather with 100 random ids; the rows come back
-- as base64 strings of little-endian float32 ("encoding": "base64").
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")
POOL_SIZE = 64
function build(rows, dim, tbl)
   local body = '{"ids":' .. random_ids_json(100, rows) .. ',"encoding":"base64"}' 
   return wrk.format("POST", "/v1/tables/" .. tbl .. "/gather", JSON_HEADERS, body)
end
