-- A stage of the pipeline, run by each script worker of swift-pipeline:
-- numbers in, their squares out, until "stop".
local numbers, squares = ...
while true do
  local x = numbers:get()
  if x == "stop" then numbers:task_done() break end
  squares:put({n = x, square = x * x, worker = jobrun.current_process().name})
  numbers:task_done()
end
