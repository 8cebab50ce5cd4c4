-- wrk: the same 200-byte POST as signed.lua, without a signature.
local body = '{"chip_id":"24AB3C91","mac_address":"24:6F:28:AB:3C:91","firmware_version":"car_wash_v1.00","pad":"' .. string.rep("x", 200 - 107) .. '"}'
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
