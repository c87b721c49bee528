-- diffill for Neovim: inline (ghost-text) completion on 0.12+, the completion-menu
-- fallback on older versions.
--
-- Put this file on your runtimepath (e.g. ~/.config/nvim/lua/diffill.lua) and call
--   require("diffill").setup({ --[[ settings, see docs/lsp.md ]] })
-- `diffill` must be on $PATH (pip install -e . in the diffill checkout).

local M = {}

local defaults = {
  cmd = { "diffill", "lsp" },
  filetypes = { "python", "javascript", "typescript", "typescriptreact", "go", "rust", "c", "cpp", "java" },
  -- Sent as initializationOptions and answered to workspace/configuration ("diffill").
  settings = {
    model = { path = "", device = "auto" },
    fill = { maxTokens = 64 },
    completion = { enable = true },
  },
  -- Key that accepts the ghost text (0.12+).
  accept_key = "<Tab>",
  -- Ghost text (true) or the completion menu (false); nil: ghost text where Neovim
  -- has it (0.12+), the menu on 0.11.
  inline = nil,
}

-- Neovim's completion menu inserts only the first word of a plain-text item (its
-- "word" is newText up to the first space): on accept, put the whole fill over the
-- item's range. The word went in at the cursor of the request.
local function complete_whole_fill(client)
  return function()
    local done = vim.v.completed_item
    local lsp_data = type(done) == "table" and type(done.user_data) == "table" and done.user_data.nvim
      and done.user_data.nvim.lsp
    if not lsp_data or lsp_data.client_id ~= client.id then
      return
    end
    local edit = lsp_data.completion_item and lsp_data.completion_item.textEdit
    local word = done.word or ""
    if not edit or edit.newText == word then
      return
    end
    local rng = edit.range or edit.replace
    local row, col = unpack(vim.api.nvim_win_get_cursor(0))
    local line = vim.api.nvim_get_current_line()
    local asked = col - #word
    if rng.start.line ~= row - 1 or rng["end"].line ~= row - 1 or line:sub(asked + 1, col) ~= word then
      return -- cancelled, or not the line the item was made for
    end
    local before = line:sub(1, asked) .. line:sub(col + 1) -- the line the server saw
    local enc = client.offset_encoding
    local first = vim.str_byteindex(before, enc, rng.start.character, false)
    local last = vim.str_byteindex(before, enc, rng["end"].character, false)
    if first > asked or last < asked then
      return
    end
    local lines = vim.split(edit.newText, "\n")
    vim.api.nvim_buf_set_text(0, row - 1, first, row - 1, col + (last - asked), lines)
    vim.api.nvim_win_set_cursor(0, { row + #lines - 1, (#lines == 1 and first or 0) + #lines[#lines] })
  end
end

-- The diffill/status reply as a short summary: one line per part, the figures a user
-- looks for (is the core up, which model, how fast, how often accepted).
function M.status_lines(st)
  local function ms(v)
    return type(v) == "number" and string.format("%.0f ms", v) or "-"
  end
  local core, lat, n = st.core or {}, st.latencyMs or {}, st.counters or {}
  local lines = {
    string.format("diffill %s  core: %s%s", (st.server or {}).version or "?", core.state or "?",
      core.error and (" (" .. tostring(core.error) .. ")") or ""),
    string.format("model: %s on %s", tostring(st.model or "-"), tostring(st.device or "-")),
    string.format("latency: p50 %s  p95 %s  (%d fills)", ms(lat.p50), ms(lat.p95), lat.n or 0),
    string.format("requests %d  answered %d  shown %d  accepted %d  errors %d", n.requests or 0, n.answered or 0,
      n.shown or 0, n.accepted or 0, n.errors or 0),
  }
  local q, cache = st.queue or {}, st.cache or {}
  table.insert(lines, string.format("queue: %s in flight  cache: %s hits, %s misses", tostring(q.inFlight or 0),
    tostring(cache.hits or 0), tostring(cache.misses or 0)))
  local s = st.settings or {}
  local fill, core_s = s.fill or {}, s.core or {}
  table.insert(lines, string.format("settings: maxTokens %s  core %s", tostring(fill.maxTokens or "-"),
    (core_s.address or "") ~= "" and core_s.address or "private"))
  table.insert(lines, ":DiffillStatus! for every field")
  return lines
end

-- A floating window that closes on q, <Esc> or leaving it.
local function show_float(lines)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].bufhidden = "wipe"
  vim.bo[buf].modifiable = false
  local width = 20
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l))
  end
  width = math.min(width, vim.o.columns - 4)
  local height = math.min(#lines, math.max(1, vim.o.lines - 6))
  local win = vim.api.nvim_open_win(buf, true, {
    relative = "editor", row = math.floor((vim.o.lines - height) / 2), col = math.floor((vim.o.columns - width) / 2),
    width = width, height = height, style = "minimal", border = "rounded", title = " diffill ",
  })
  for _, key in ipairs({ "q", "<Esc>" }) do
    vim.keymap.set("n", key, function()
      pcall(vim.api.nvim_win_close, win, true)
    end, { buffer = buf, nowait = true })
  end
  vim.api.nvim_create_autocmd("WinLeave", { buffer = buf, once = true, callback = function()
    pcall(vim.api.nvim_win_close, win, true)
  end })
  return win
end
M.show_float = show_float

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", defaults, opts or {})
  local has_inline = vim.lsp.inline_completion ~= nil -- Neovim 0.12+
  if opts.inline ~= nil then
    has_inline = opts.inline and has_inline
  end

  -- Older Neovim has no inline completion: let the completion menu carry the fill.
  opts.settings.completion.enable = opts.settings.completion.enable or not has_inline

  vim.lsp.config("diffill", {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = { ".git", "pyproject.toml", "package.json", "go.mod", "Cargo.toml" },
    init_options = opts.settings,
    settings = { diffill = opts.settings },
    capabilities = {
      general = { positionEncodings = { "utf-8", "utf-16", "utf-32" } },
    },
  })
  vim.lsp.enable("diffill")

  vim.api.nvim_create_autocmd("LspAttach", {
    callback = function(args)
      local client = vim.lsp.get_client_by_id(args.data.client_id)
      if not client or client.name ~= "diffill" then
        return
      end
      if has_inline then
        vim.lsp.inline_completion.enable(true, { bufnr = args.buf })
        vim.keymap.set("i", opts.accept_key, function()
          if not vim.lsp.inline_completion.get() then
            return opts.accept_key
          end
        end, { buffer = args.buf, expr = true, replace_keycodes = true, desc = "diffill: accept" })
      else
        -- 0.11: built-in completion with autotrigger shows diffill's one item.
        if vim.lsp.completion and vim.lsp.completion.enable then
          vim.lsp.completion.enable(true, client.id, args.buf, { autotrigger = true })
          vim.api.nvim_create_autocmd("CompleteDone", { buffer = args.buf, callback = complete_whole_fill(client) })
        end
      end
      -- Fill every hole of the buffer in one request (<|fill|>, pass, todo!(), ...).
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillFillHoles", function()
        client:exec_cmd({ title = "Fill all holes", command = "diffill.fillHoles", arguments = { vim.uri_from_bufnr(args.buf) } },
          { bufnr = args.buf })
      end, { desc = "diffill: fill all holes" })
      -- A short summary in a floating window; with ! every field of the reply.
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillStatus", function(cmd)
        client:request("diffill/status", {}, function(err, result)
          if err then
            vim.notify("diffill: status failed: " .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
            return
          end
          show_float(cmd.bang and vim.split(vim.inspect(result), "\n") or M.status_lines(result))
        end, args.buf)
      end, { bang = true, desc = "diffill: status (! for every field)" })
    end,
  })
end

return M
