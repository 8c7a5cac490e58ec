-- wrk at a fixed rate: each connection waits DELAY_MS between its requests (wrk's delay() hook),
-- so C connections send about C * 1000 / DELAY_MS requests per second while latency stays below it.
local delay_ms = tonumber(os.getenv("DELAY_MS") or "10")
function delay()
    return delay_ms
end
