-- luacheck configuration: `luacheck lua spec` must be clean.
std = "luajit"
max_line_length = 120

files["spec"] = {
  std = "+busted",
}

-- Job configs run with one extra global, env(NAME, DEFAULT).
files["config"] = { read_globals = { "env" } }
files["spec/integration/fixtures"] = { read_globals = { "env" } }
-- bench/job.lua answers the shipped config's env() calls itself, so it sets env.
files["bench"] = { globals = { "env" } }
