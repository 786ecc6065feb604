import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { sha256 } from './hashes.ts';
import { makeSafetensors, type TensorSpec } from './safetensors.ts';

/**
 * Studio in a real headless Chromium (Debian's `chromium`, which `.ci/run` installs; another
 * binary with CHROMIUM_PATH), driven by playwright-core: no browser is downloaded. Screenshots
 * of the main states go to `test-artifacts/studio/` (gitignored).
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const ARTIFACTS = join(ROOT, 'test-artifacts', 'studio');
export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 390, height: 844 };

/** Builds studio/dist when its sources changed since the last build (a few seconds), as `npm start` does. */
export function buildStudioIfStale(): void {
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/studio-build.ts', '--if-stale'], { cwd: ROOT, stdio: 'inherit' });
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`No Chromium at ${CHROMIUM_PATH}: install Debian's chromium (apt-get install chromium) or set CHROMIUM_PATH`);
  }
  await mkdir(ARTIFACTS, { recursive: true });
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** A fresh browser context signed in with `token` (as Studio keeps it: sessionStorage), errors collected. */
export async function signedInPage(
  browser: Browser,
  baseUrl: string,
  token: string | null,
  viewport = DESKTOP,
): Promise<{ context: BrowserContext; page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport });
  if (token) await context.addInitScript((t) => sessionStorage.setItem('lora-vault.studio.token', t), token);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${baseUrl}/studio/`);
  return { context, page, errors };
}

/** Holds the page's uploads to about `bytesPerSecond` (Chromium's own network emulation), so progress is seen on any machine. */
export async function throttleUploads(context: BrowserContext, page: Page, bytesPerSecond: number): Promise<void> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  });
}

export async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * Drops files on the drop zone the way a drag from the desktop does (dragenter, dragover, drop
 * with a DataTransfer holding File objects). Each file is its bytes, or a safetensors header
 * followed by `zeroBytes` of tensor data made in the page (so a large file need not cross CDP);
 * `lastModified` (default now) makes the same file again, as a second drop after a reload does.
 */
export async function dropFiles(
  page: Page,
  files: { name: string; bytes: Buffer; zeroBytes?: number; lastModified?: number }[],
): Promise<void> {
  const payload = files.map((f) => ({
    name: f.name,
    base64: f.bytes.toString('base64'),
    zeroBytes: f.zeroBytes ?? 0,
    lastModified: f.lastModified ?? Date.now(),
  }));
  await page.getByTestId('dropzone').evaluate((zone, list) => {
    const transfer = new DataTransfer();
    for (const f of list) {
      const head = Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0));
      transfer.items.add(new File([head, new Uint8Array(f.zeroBytes)], f.name, { lastModified: f.lastModified }));
    }
    for (const type of ['dragenter', 'dragover', 'drop']) {
      zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }
  }, payload);
}

/**
 * A real safetensors LoRA of about `megabytes` MB: SD1.5 LoRA tensors plus one large tensor,
 * returned as the file's header (with the small tensors' data) and the count of zero bytes that
 * complete it, for `dropFiles`, and the whole file's sha256.
 */
export function largeSafetensors(megabytes: number): { bytes: Buffer; zeroBytes: number; totalBytes: number; sha256: string } {
  const bigElements = Math.floor((megabytes * 1024 * 1024) / 2 / 320) * 320;
  const tensors: TensorSpec[] = [
    { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight', shape: [4, 320] },
    { name: 'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight', shape: [320, 4] },
    { name: 'lora_unet_mid_block_attentions_0_proj_out.lora_up.weight', shape: [bigElements / 320, 320] },
  ];
  const metadata = {
    ss_network_dim: '4',
    ss_network_alpha: '2',
    ss_base_model_version: 'sd_v1',
    ss_num_epochs: '12',
    'modelspec.trigger_phrase': 'inkwash style, sumi-e',
  };
  const full = makeSafetensors(tensors, metadata);
  const zeroBytes = bigElements * 2;
  const bytes = full.subarray(0, full.length - zeroBytes);
  // the file as dropped: the large tensor's data is zeros (makeSafetensors fills it otherwise)
  return { bytes, zeroBytes, totalBytes: full.length, sha256: sha256(Buffer.concat([bytes, Buffer.alloc(zeroBytes)])) };
}
