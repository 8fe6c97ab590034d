-- wrk: every request with a path, a query and a Host the proxy has not seen before (what
-- grows a proxy's per-path or per-host state, if it keeps any).
local n = 0
local id = tostring(math.random(1, 1e9))

request = function()
  n = n + 1
  local path = "/soak/" .. id .. "/" .. n .. "?q=" .. math.random(1, 1e9)
  return wrk.format("GET", path, { ["Host"] = "h" .. n .. ".soak.test", ["X-Request-N"] = tostring(n) })
end
