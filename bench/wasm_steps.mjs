// Runs filter/examples/wasm_steps.rs, built for wasm32-wasip1, in Node's V8 (WASI preview 1)
// with the repository as its only directory: `node bench/wasm_steps.mjs <file.wasm> [calls]`.
// `make bench-wasm` calls it.
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { argv } from "node:process";
import { fileURLToPath } from "node:url";
import { WASI } from "node:wasi";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const wasi = new WASI({
  version: "preview1",
  args: ["wasm_steps", ...argv.slice(3)],
  env: {},
  preopens: { [root]: root },
});
const module = await WebAssembly.compile(await readFile(argv[2]));
// The filter's proxy-wasm entry points come along with the library and import Envoy's host
// functions; none is called here, so each gets a stub that fails loudly if it ever is.
const imports = wasi.getImportObject();
for (const { module: name, name: field, kind } of WebAssembly.Module.imports(module)) {
  if (kind === "function" && !(name in imports && field in imports[name])) {
    imports[name] ??= {};
    imports[name][field] = () => {
      throw new Error(`host function ${name}.${field} called outside Envoy`);
    };
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// The library's proxy-wasm `_initialize` export is for Envoy; Node refuses to start a
// command that has one, so it sees only what a command needs.
const { _start, memory } = instance.exports;
wasi.start({ exports: { _start, memory } });
