import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

/**
 * Studio builds to static files in `dist/` for `/studio/` (the API server serves them; EmProps may
 * host them anywhere with `VITE_LORA_VAULT_URL` pointing at the API). `npm run dev -w studio`
 * serves it with hot reload and proxies the API to a local `npm start`.
 */
const api = process.env.LORA_VAULT_DEV_API ?? 'http://127.0.0.1:4000';

export default defineConfig({
  base: '/studio/',
  plugins: [react()],
  build: { outDir: 'dist', emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 1024 },
  server: {
    proxy: {
      '/graphql': { target: api, ws: true },
      '/studio/dev-tokens': { target: api },
    },
  },
});
