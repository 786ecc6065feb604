import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Browser, FileChooser, Page, Route } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  buildStudioIfStale,
  dropFiles,
  largeSafetensors,
  launchChromium,
  screenshot,
  signedInPage,
  throttleUploads,
} from '../testkit/browser.ts';
import { getLora, listLoras, setUserLoraQuota } from '../testkit/library-helpers.ts';
import { BAD_PT_FILES } from '../testkit/pt-files.ts';
import { heldBlocks } from '../testkit/resumable.ts';
import { smallSd15Lora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Studio's uploads, edits and deletes in headless Chromium against the real server and storage:
 * drag and drop with live progress, typed refusals as sentences, the quota warning and early
 * refusal, rename, delete, live removal from another page, and keyboard-only upload and delete.
 */

// a browser drives real uploads on a shared 2-core machine: generous, never tight
vi.setConfig({ testTimeout: 60_000 });
/** expect.poll with room for a loaded machine (its default gives up after 1 s). */
const eventually = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 20_000, interval: 100 });

let server: TestServer;
let browser: Browser;

beforeAll(async () => {
  buildStudioIfStale();
  // 1 MiB blocks: a few MiB file is several Put Blocks, so progress advances in steps
  [server, browser] = await Promise.all([startTestServer({ UPLOAD_BLOCK_BYTES: String(1024 * 1024) }), launchChromium()]);
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

async function newUser(): Promise<{ userId: string; token: string }> {
  const userId = newUserId();
  return { userId, token: await server.tokens.user(userId) };
}

/** A new user's signed-in, empty library page whose uploads are throttled to `bytesPerSecond`. */
async function throttledLibraryPage(bytesPerSecond: number) {
  const { userId, token } = await newUser();
  const { context, page, errors } = await signedInPage(browser, server.url, token);
  await page.getByTestId('empty-state').waitFor();
  await throttleUploads(context, page, bytesPerSecond);
  return { userId, token, context, page, errors };
}

const rows = (page: Page) => page.getByTestId('upload-row');
const itemNames = (page: Page) => page.getByTestId('lora-item').locator('.card__name').allInnerTexts();
/** Opens a LoRA's details from its card in the library. */
const openLora = (page: Page, name: string) => page.getByTestId('lora-item').filter({ hasText: name }).getByRole('button').click();

/** Put Blocks and multipart requests the page sends. */
function recordUploadRequests(page: Page): { blockPuts: string[]; multipart: string[] } {
  const seen = { blockPuts: [] as string[], multipart: [] as string[] };
  page.on('request', (r) => {
    if (r.method() === 'PUT' && r.url().includes('comp=block')) seen.blockPuts.push(r.url());
    if ((r.headers()['content-type'] ?? '').startsWith('multipart/')) seen.multipart.push(r.url());
  });
  return seen;
}

/** The user's upload sessions as the database holds them. */
const sessionsOf = (userId: string) =>
  server.app.db.upload_session.findMany({ where: { user_id: userId }, select: { state: true, blob_path: true } });

/** The file keys Studio keeps upload sessions under in the page's IndexedDB (sdk/browser-resumable.ts). */
function savedSessionKeys(page: Page): Promise<string[]> {
  return page.evaluate(
    () =>
      new Promise<string[]>((resolve, reject) => {
        const open = indexedDB.open('lora-vault-uploads', 1);
        open.onupgradeneeded = () => open.result.createObjectStore('sessions');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const keys = open.result.transaction('sessions', 'readonly').objectStore('sessions').getAllKeys();
          keys.onsuccess = () => resolve(keys.result.map(String));
          keys.onerror = () => reject(keys.error);
        };
      }),
  );
}

/** Records every value and phase an upload row's progress shows, as the page renders them. */
async function recordProgress(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen: { phase: string | null; value: number | null }[] = [];
    (window as unknown as { progressSeen: typeof seen }).progressSeen = seen;
    new MutationObserver(() => {
      const row = document.querySelector('[data-testid="upload-row"]');
      const bar = row?.querySelector('progress');
      const entry = { phase: row?.getAttribute('data-phase') ?? null, value: bar ? Number(bar.value) : null };
      const last = seen.at(-1);
      if (!last || last.phase !== entry.phase || last.value !== entry.value) seen.push(entry);
    }).observe(document.body, { subtree: true, childList: true, attributes: true });
  });
}

describe('uploading', () => {
  it('a safetensors file dropped on the page goes in blocks straight to storage with advancing progress, then is listed with its facts and the quota grows', async () => {
    const { userId, token, context, page, errors } = await throttledLibraryPage(4_000_000); // ~2 s of sending, on a fast machine too
    await recordProgress(page);
    const requests = recordUploadRequests(page);
    const file = largeSafetensors(8);
    await dropFiles(page, [{ name: 'ink-wash.safetensors', bytes: file.bytes, zeroBytes: file.zeroBytes }]);
    await expect.poll(() => rows(page).getAttribute('data-phase'), { timeout: 60_000, interval: 100 }).toBe('DONE');
    await screenshot(page, 'upload-done');

    const seen = await page.evaluate(() => (window as unknown as { progressSeen: { phase: string; value: number | null }[] }).progressSeen);
    const partial = seen.map((s) => s.value).filter((v): v is number => v !== null && v > 0 && v < file.totalBytes);
    expect(partial.length, JSON.stringify(seen)).toBeGreaterThanOrEqual(2);
    expect([...partial].sort((a, b) => a - b)).toEqual(partial); // only ever forward
    expect(seen.map((s) => s.phase)).toContain('RECEIVING');
    expect(seen.at(-1)?.phase).toBe('DONE');

    await eventually(() => itemNames(page)).toEqual(['ink-wash']);
    await eventually(() => page.getByTestId('quota').innerText()).toMatch(/8\.\d MiB of 10\.0 GiB[\s\S]*1 of 100/);
    const [stored] = (await listLoras(server, token)).loras;
    const { sha256 } = file;
    expect(stored).toMatchObject({ name: 'ink-wash', sizeBytes: file.totalBytes, sha256 });
    // the resumable path: every block PUT to Blob Storage's origin through the session's SAS, no multipart request
    expect(requests.multipart).toEqual([]);
    expect(requests.blockPuts.length).toBeGreaterThanOrEqual(Math.ceil(file.totalBytes / (1024 * 1024)));
    const storageOrigin = new URL(server.app.blobs.url('x')).origin;
    expect(new Set(requests.blockPuts.map((u) => new URL(u).origin))).toEqual(new Set([storageOrigin]));
    expect(storageOrigin).not.toBe(new URL(server.url).origin);
    expect((await sessionsOf(userId)).map((s) => s.state)).toEqual(['COMPLETED']);
    // Studio says where the upload comes from: the platform's flat_file row records it (docs/flat-file.md)
    const row = await server.app.db.flat_file.findUniqueOrThrow({ where: { id: BigInt(stored?.id as string) } });
    expect((row.gen_out_data as { upload_source: string }).upload_source).toBe('emprops_studio');

    await openLora(page, 'ink-wash');
    const details = page.getByTestId('details');
    await eventually(() => details.getByTestId('autov2').innerText()).toBe(sha256.slice(0, 10));
    const facts = await details.innerText();
    expect(facts).toMatch(/Base model\s+SD1/);
    expect(facts).toMatch(/Rank\s+4 \(alpha 2\)/);
    expect(facts).toMatch(/Training epochs\s+12/);
    expect(facts).toContain(sha256);
    const triggerWords = await details.getByTestId('trigger-words').innerText();
    expect(triggerWords).toMatch(/inkwash style/);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.url });
    await details.getByRole('button', { name: 'Copy trigger words' }).click();
    await eventually(() => details.getByText('Trigger words copied.').count()).toBe(1);
    expect(await page.evaluate(() => navigator.clipboard.readText())).toMatch(/inkwash style/);
    await screenshot(page, 'details-1280');
    expect(errors).toEqual([]);
    expect(userId).toBeTruthy();
    await context.close();
  });

  it('hostile and foreign files are refused with sentences that say why, and nothing is stored', async () => {
    const { token } = await newUser();
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await page.getByTestId('empty-state').waitFor();
    const unsafe = BAD_PT_FILES.find((f) => f.expect === 'UNSAFE_FILE' && f.name.includes('os.system'));
    if (!unsafe) throw new Error('no os.system fixture');
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(64, 1)]);
    await dropFiles(page, [
      { name: 'free-style.pt', bytes: unsafe.bytes },
      { name: 'cat.safetensors', bytes: png },
    ]);
    await eventually(() => rows(page).evaluateAll((els) => els.map((e) => e.getAttribute('data-phase')))).toEqual(['FAILED', 'FAILED']);
    const messages = await page.getByRole('alert').allInnerTexts();
    expect(messages).toContainEqual(
      expect.stringMatching(/“free-style\.pt” was refused because loading it could run code on the GPU machines: it calls .*os\.system/),
    );
    expect(messages).toContainEqual(
      expect.stringMatching(/“cat\.safetensors” is not a LoRA file Studio can store \(it looks like a PNG image\): /),
    );
    await screenshot(page, 'upload-refused');
    expect((await listLoras(server, token)).total).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('warns from 80 % of the quota, and refuses a file that cannot fit before sending a byte', async () => {
    const { userId, token } = await newUser();
    for (let i = 0; i < 4; i++) await seedLora(server.app, userId, { name: `kept ${i}` });
    await setUserLoraQuota(server, { userId, maxLoraCount: 5 });
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await eventually(() => page.getByTestId('quota-warning').innerText()).toMatch(/almost full \(80 % used\)/);

    const used = (await listLoras(server, token)).loras.reduce((sum, l) => sum + l.sizeBytes, 0);
    await setUserLoraQuota(server, { userId, maxLoraCount: 5, maxStorageBytes: used + 100 });
    await page.reload();
    await eventually(() => page.getByTestId('quota').innerText()).toMatch(/4 of 5/);
    const uploads: string[] = [];
    page.on('request', (r) => {
      if ((r.headers()['content-type'] ?? '').startsWith('multipart/')) uploads.push(r.url());
    });
    await dropFiles(page, [{ name: 'too-big.safetensors', bytes: smallSd15Lora() }]);
    await eventually(() => rows(page).getAttribute('data-phase')).toBe('FAILED');
    expect(await page.getByRole('alert').innerText()).toMatch(
      /“too-big\.safetensors” \(.+\) does not fit: you use .+ of .+, so only 100 bytes is free/,
    );
    await screenshot(page, 'quota-warning-and-refusal');
    expect(uploads).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('cancelling', () => {
  it('Cancel stops an upload in flight: the row says so, the session is aborted, nothing is stored, the quota is untouched', async () => {
    const { userId, token } = await newUser();
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await page.getByTestId('empty-state').waitFor();
    // Two Put Blocks go through; the others wait at the route until Cancel, so Cancel always comes
    // while blocks are still going, however slow or fast the machine
    const waiting: Route[] = [];
    let passed = 0;
    await context.route(
      (url) => url.searchParams.get('comp') === 'block',
      (route) => {
        if (passed < 2) {
          passed++;
          return route.continue();
        }
        waiting.push(route);
      },
    );
    const file = largeSafetensors(8); // 9 blocks of 1 MiB
    await dropFiles(page, [{ name: 'slow.safetensors', bytes: file.bytes, zeroBytes: file.zeroBytes }]);
    await eventually(() =>
      rows(page)
        .locator('progress')
        .evaluate((bar) => Number((bar as HTMLProgressElement).value) > 0),
    ).toBe(true);
    expect(await savedSessionKeys(page)).toHaveLength(1); // the page keeps the session while it sends
    await eventually(() => waiting.length).toBeGreaterThan(0); // blocks still going
    await page.getByRole('button', { name: 'Cancel upload of slow.safetensors' }).click();
    await eventually(() => rows(page).getAttribute('data-phase')).toBe('CANCELLED');
    for (const route of waiting.splice(0)) await route.abort().catch(() => {}); // (the page gave them up already)
    expect(await rows(page).innerText()).toMatch(/The upload of “slow\.safetensors” was cancelled\. Nothing was stored\./);
    await screenshot(page, 'upload-cancelled');
    await eventually(async () => (await listLoras(server, token)).total).toBe(0);
    expect(await page.getByTestId('quota').innerText()).toMatch(/0 bytes of[\s\S]*0 of 100/);
    // the session was ended (its reservation released) and its staged blocks are gone from storage
    await eventually(async () => (await sessionsOf(userId)).map((s) => s.state)).toEqual(['ABORTED']);
    const [session] = await sessionsOf(userId);
    expect(await server.app.blobs.sessionBlob(session?.blob_path as string).blockList()).toEqual({ committed: [], uncommitted: [] });
    // and the page forgot it: the same file dropped again starts a new session
    expect(await savedSessionKeys(page)).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  }, 120_000);
});

describe('validating', () => {
  it('once every block is in storage and the file is being checked, Cancel gives way to a disabled "Validating…"', async () => {
    const { token } = await newUser();
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await page.getByTestId('empty-state').waitFor();
    // every rendering of the row: its phase, and which of its buttons can be pressed
    await page.evaluate(() => {
      const seen: { phase: string | null; cancel: boolean; validating: boolean }[] = [];
      (window as unknown as { buttonsSeen: typeof seen }).buttonsSeen = seen;
      new MutationObserver(() => {
        const row = document.querySelector('[data-testid="upload-row"]');
        if (!row) return;
        const buttons = [...row.querySelectorAll('button')];
        const entry = {
          phase: row.getAttribute('data-phase'),
          cancel: buttons.some((b) => b.textContent === 'Cancel' && !b.disabled),
          validating: buttons.some((b) => b.textContent === 'Validating…' && b.disabled),
        };
        const last = seen.at(-1);
        if (!last || JSON.stringify(last) !== JSON.stringify(entry)) seen.push(entry);
      }).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
    });
    const file = largeSafetensors(4);
    await dropFiles(page, [{ name: 'checked.safetensors', bytes: file.bytes, zeroBytes: file.zeroBytes }]);
    await expect.poll(() => rows(page).getAttribute('data-phase'), { timeout: 60_000, interval: 100 }).toBe('DONE');
    const seen = await page.evaluate(
      () => (window as unknown as { buttonsSeen: { phase: string; cancel: boolean; validating: boolean }[] }).buttonsSeen,
    );
    expect(seen.some((s) => s.phase === 'RECEIVING' && s.cancel)).toBe(true);
    const checking = seen.filter((s) => s.phase === 'VALIDATING' || s.phase === 'STORING');
    expect(checking.length, JSON.stringify(seen)).toBeGreaterThan(0);
    // a Cancel there could not stop the completion (the upload ends DONE): none is offered
    expect(checking.filter((s) => s.cancel || !s.validating)).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('resuming', () => {
  it('the same file dropped again after a reload resumes its session: only the blocks storage lacks are sent', async () => {
    const { userId, token, context, page, errors } = await throttledLibraryPage(1_000_000);
    const file = largeSafetensors(12);
    const blocks = Math.ceil(file.totalBytes / (1024 * 1024));
    const drop = { name: 'resumed.safetensors', bytes: file.bytes, zeroBytes: file.zeroBytes, lastModified: 1_700_000_000_000 };
    await dropFiles(page, [drop]);
    // wait until storage holds a few blocks, then reload in the middle of the upload
    const [session] = await (async () => {
      await eventually(async () => (await sessionsOf(userId)).length).toBe(1);
      return sessionsOf(userId);
    })();
    const blobPath = session?.blob_path as string;
    // staged blocks, and those the server committed while validating ahead
    const held = async () => (await heldBlocks(server.app, blobPath)).length;
    await eventually(async () => (await held()) >= 3).toBe(true);
    await page.reload();
    await page.getByTestId('empty-state').waitFor();
    expect(await savedSessionKeys(page)).toHaveLength(1); // the page still knows the session
    const before = await held();
    expect(before).toBeLessThan(blocks);

    const requests = recordUploadRequests(page);
    await dropFiles(page, [drop]);
    await expect.poll(() => rows(page).getAttribute('data-phase'), { timeout: 60_000, interval: 100 }).toBe('DONE');
    // the same session completed; this page sent only what storage lacked (a block in flight at the reload may go again)
    expect((await sessionsOf(userId)).map((s) => s.state)).toEqual(['COMPLETED']);
    expect(requests.blockPuts.length).toBeLessThanOrEqual(blocks - before);
    expect(requests.blockPuts.length).toBeGreaterThan(0);
    const { sha256 } = file;
    const [stored] = (await listLoras(server, token)).loras;
    expect(stored).toMatchObject({ name: 'resumed', sizeBytes: file.totalBytes, sha256 });
    expect(await savedSessionKeys(page)).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('resuming only the same file', () => {
  it('another file with the same name, size and time dropped after a reload gets its own session and its own bytes', async () => {
    const { userId, token } = await newUser();
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await page.getByTestId('empty-state').waitFor();
    await throttleUploads(context, page, 1_000_000);
    const file = largeSafetensors(8);
    const first = {
      name: 'pytorch_lora_weights.safetensors',
      bytes: file.bytes,
      zeroBytes: file.zeroBytes,
      lastModified: 1_700_000_000_000,
    };
    await dropFiles(page, [first]);
    await eventually(async () => (await sessionsOf(userId)).length).toBe(1);
    const [session] = await sessionsOf(userId);
    // the first block (where the two files differ) is in storage, then the page reloads
    const firstBlock = Buffer.from('lvb-000000').toString('base64');
    await eventually(async () => {
      const list = await server.app.blobs.sessionBlob(session?.blob_path as string).blockList();
      return [...list.committed, ...list.uncommitted].some((b) => b.id === firstBlock);
    }).toBe(true);
    await page.reload();
    await page.getByTestId('empty-state').waitFor();
    expect(await savedSessionKeys(page)).toHaveLength(1);

    const otherBytes = Buffer.from(file.bytes);
    const at = otherBytes.length - 2; // a weight of the small tensors: another file, alike in name, size and time
    otherBytes[at] = (otherBytes[at] ?? 0) ^ 0x01;
    await dropFiles(page, [{ ...first, bytes: otherBytes }]);
    await expect.poll(() => rows(page).getAttribute('data-phase'), { timeout: 60_000, interval: 100 }).toBe('DONE');
    const sha256 = createHash('sha256')
      .update(Buffer.concat([otherBytes, Buffer.alloc(file.zeroBytes)]))
      .digest('hex');
    const [stored] = (await listLoras(server, token)).loras;
    expect(stored?.sha256).toBe(sha256);
    // the first file's session is untouched (still OPEN, still saved), the second completed
    expect((await sessionsOf(userId)).map((s) => s.state).sort()).toEqual(['COMPLETED', 'OPEN']);
    const keys = await savedSessionKeys(page);
    expect(keys).toHaveLength(1);
    expect(keys[0]).toContain(userId); // kept per user: another user signed in here never meets it
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('editing and deleting', () => {
  it('renames and retags, then deletes with confirmation; the list and quota follow', async () => {
    const { userId, token } = await newUser();
    const lora = await seedLora(server.app, userId, { name: 'first name' });
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await openLora(page, 'first name');
    await page.getByLabel('Name', { exact: true }).fill('Ink wash v2');
    await page.getByLabel('Tags', { exact: true }).fill('style, ink ,style');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await eventually(() => itemNames(page)).toEqual(['Ink wash v2']);
    const renamed = await getLora(server, token, lora.id);
    expect(renamed).toMatchObject({ name: 'Ink wash v2', tags: ['style', 'ink'] });

    await page.getByRole('button', { name: 'Delete…' }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete “Ink wash v2”?' });
    await dialog.waitFor();
    await screenshot(page, 'delete-confirmation');
    await dialog.getByRole('button', { name: 'Keep it' }).click();
    expect(await itemNames(page)).toEqual(['Ink wash v2']);
    await page.getByRole('button', { name: 'Delete…' }).click();
    await dialog.getByRole('button', { name: 'Delete LoRA' }).click();
    await page.getByTestId('empty-state').waitFor();
    await eventually(() => page.getByTestId('quota').innerText()).toMatch(/0 bytes of[\s\S]*0 of 100/);
    expect((await listLoras(server, token)).total).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });

  it('Download saves the exact bytes under the display name, through the owner link', async () => {
    const { userId, token } = await newUser();
    const bytes = smallSd15Lora();
    await seedLora(server.app, userId, { name: 'Ink wash: v3', bytes });
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await openLora(page, 'Ink wash: v3');
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download' }).click()]);
    expect(download.suggestedFilename()).toMatch(/^Ink wash.*v3\.safetensors$/);
    expect(download.url().startsWith(`${server.url}/downloads/loras/`)).toBe(true); // through the API, not storage (THREATS row 72)
    const saved = await download.path();
    expect(
      createHash('sha256')
        .update(await readFile(saved))
        .digest('hex'),
    ).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(page.url()).toContain('/studio'); // the page stays; the browser saved the file
    expect(errors).toEqual([]);
    await context.close();
  });

  it('a LoRA deleted from a second page disappears from the first without a reload', async () => {
    const { userId, token } = await newUser();
    const doomed = await seedLora(server.app, userId, { name: 'doomed' });
    await seedLora(server.app, userId, { name: 'survivor' });
    const first = await signedInPage(browser, server.url, token);
    await eventually(() => itemNames(first.page)).toEqual(['survivor', 'doomed']);
    await openLora(first.page, 'doomed'); // its details are open here
    await first.page.getByTestId('details').getByText(doomed.fileName).waitFor();

    const second = await signedInPage(browser, server.url, token);
    await openLora(second.page, 'doomed');
    await second.page.getByRole('button', { name: 'Delete…' }).click();
    await second.page.getByRole('button', { name: 'Delete LoRA' }).click();

    await eventually(() => itemNames(first.page)).toEqual(['survivor']);
    await eventually(() => first.page.getByTestId('notice').innerText()).toBe('The LoRA you had open was deleted elsewhere.');
    expect(await first.page.getByTestId('details').count()).toBe(0);
    await screenshot(first.page, 'live-removal');
    expect([...first.errors, ...second.errors]).toEqual([]);
    await Promise.all([first.context.close(), second.context.close()]);
  });
});

describe('keyboard only', () => {
  /** Presses Tab until the focused element's accessible text matches, failing after `max` presses. */
  async function tabTo(page: Page, text: RegExp, max = 60): Promise<void> {
    for (let i = 0; i < max; i++) {
      await page.keyboard.press('Tab');
      const focused = await page.evaluate(() => {
        const el = document.activeElement as HTMLElement | null;
        return `${el?.getAttribute('aria-label') ?? ''} ${el?.innerText ?? ''}`.trim();
      });
      if (text.test(focused)) {
        // the focus is visible: an outline is drawn on the focused control
        const outline = await page.evaluate(() => getComputedStyle(document.activeElement as Element).outlineStyle);
        expect(outline, `focus ring on ${focused}`).not.toBe('none');
        return;
      }
    }
    throw new Error(`never reached ${text} with Tab`);
  }

  it('uploads with the file picker and deletes with the confirmation, using only the keyboard', async () => {
    const { token } = await newUser();
    const { context, page, errors } = await signedInPage(browser, server.url, token);
    await page.bringToFront(); // keys go to the focused page (earlier tests opened others)
    await page.getByTestId('empty-state').waitFor();

    // listening before any key is pressed turns on Playwright's file chooser interception in time
    const chooserOpened = new Promise<FileChooser>((resolve) => page.once('filechooser', resolve));
    await tabTo(page, /^Choose files/);
    await page.keyboard.press('Enter');
    const chooser = await chooserOpened;
    await chooser.setFiles({ name: 'keyboard.safetensors', mimeType: 'application/octet-stream', buffer: smallSd15Lora() });
    await eventually(() => rows(page).getAttribute('data-phase')).toBe('DONE');
    await eventually(() => itemNames(page)).toEqual(['keyboard']);

    await tabTo(page, /^keyboard/);
    await page.keyboard.press('Enter');
    await tabTo(page, /^Delete…/);
    await page.keyboard.press('Enter');
    // the dialog takes the focus on "Keep it"; one Tab further is the delete
    expect(await page.evaluate(() => (document.activeElement as HTMLElement).innerText)).toBe('Keep it');
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => (document.activeElement as HTMLElement).innerText)).toBe('Delete LoRA');
    await page.keyboard.press('Enter');
    await page.getByTestId('empty-state').waitFor();
    expect((await listLoras(server, token)).total).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });
});
