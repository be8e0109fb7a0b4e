// Builds the browser bundle from the compiled ESM, and keeps the copy the
// bridge binary embeds (crates/app/src/sdk/wsbridge.js) in step with it.
//
//   node scripts/bundle.mjs          # dist/wsbridge.browser.js
//   node scripts/bundle.mjs --sync   # ... and copy it to the embedded path
//   node scripts/bundle.mjs --check  # ... and fail if the embedded copy differs
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(dirname(fileURLToPath(import.meta.url)));
const out = join(here, "dist", "wsbridge.browser.js");
const embedded = join(here, "..", "..", "crates", "app", "src", "sdk", "wsbridge.js");

await build({
  entryPoints: [join(here, "dist", "wsbridge.js")],
  outfile: out,
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020"],
  minify: false,
  legalComments: "none",
  logLevel: "warning",
  banner: { js: "// @wsbridge/client browser bundle (ESM). Generated from clients/ts: npm run sync-bundle." },
});

const mode = process.argv[2];
const built = readFileSync(out);
if (mode === "--sync") {
  mkdirSync(dirname(embedded), { recursive: true });
  writeFileSync(embedded, built);
  console.log(`copied to ${relative(process.cwd(), embedded)}`);
} else if (mode === "--check") {
  const committed = existsSync(embedded) ? readFileSync(embedded) : undefined;
  if (!committed || !committed.equals(built)) {
    console.error(
      `${relative(process.cwd(), embedded)} ${committed ? "differs from" : "is missing; it should be"} the freshly built bundle: run \`npm run sync-bundle\` in clients/ts and commit it`,
    );
    process.exit(1);
  }
  console.log(`${relative(process.cwd(), embedded)} matches the build`);
}
