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
}

function M.setup(opts)
  opts = vim.tbl_deep_extend("force", defaults, opts or {})
  local has_inline = vim.lsp.inline_completion ~= nil -- Neovim 0.12+

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
        end
      end
      -- Fill every hole of the buffer jointly (<|fill|>, pass, todo!(), ...).
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillFillHoles", function()
        client:exec_cmd({ title = "Fill all holes", command = "diffill.fillHoles", arguments = { vim.uri_from_bufnr(args.buf) } },
          { bufnr = args.buf })
      end, { desc = "diffill: fill all holes" })
      vim.api.nvim_buf_create_user_command(args.buf, "DiffillStatus", function()
        client:request("diffill/status", {}, function(err, result)
          vim.notify(err and vim.inspect(err) or vim.inspect(result))
        end, args.buf)
      end, { desc = "diffill: status" })
    end,
  })
end

return M
