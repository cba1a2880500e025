// The dashboard's front-end build: one HTML page and hashed assets, written into the Python
// package (kagent/dashboard/static) so `pip install` ships them and nothing is fetched at run time.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "../../kagent/dashboard/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
    chunkSizeWarningLimit: 400,
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});
