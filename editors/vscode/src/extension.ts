// diffill for VS Code: launches `diffill lsp` over stdio with vscode-languageclient
// (>= 10, which speaks LSP 3.18 textDocument/inlineCompletion, so ghost text works
// with no extra code here).
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("diffill");
  const [command, ...args] = config.get<string[]>("command", ["diffill", "lsp"]);
  const serverOptions: ServerOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    // Settings go over workspace/configuration (section "diffill") and
    // didChangeConfiguration; the server also reads these at start.
    initializationOptions: JSON.parse(JSON.stringify(config)),
    synchronize: { configurationSection: "diffill" },
  };
  client = new LanguageClient("diffill", "diffill", serverOptions, clientOptions);
  await client.start();

  context.subscriptions.push(
    vscode.commands.registerCommand("diffill.fillHolesInEditor", async () => {
      const editor = vscode.window.activeTextEditor;
      if (!editor || !client) {
        return;
      }
      const result = await client.sendRequest("workspace/executeCommand", {
        command: "diffill.fillHoles",
        arguments: [editor.document.uri.toString()],
      });
      vscode.window.setStatusBarMessage(`diffill: ${JSON.stringify(result)}`, 4000);
    }),
    vscode.commands.registerCommand("diffill.showStatus", async () => {
      if (!client) {
        return;
      }
      const status = await client.sendRequest("diffill/status", {});
      const doc = await vscode.workspace.openTextDocument({ language: "json", content: JSON.stringify(status, null, 2) });
      await vscode.window.showTextDocument(doc);
    }),
  );
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
