import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildStudioIfStale, DESKTOP, launchChromium, PHONE, screenshot, signedInPage } from '../testkit/browser.ts';
import { sizedLora } from '../testkit/safetensors.ts';
import { newUserId, seedLora } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';

/**
 * Studio's library page in headless Chromium against the real server: ~60 seeded LoRAs searched,
 * filtered by tag and base model, sorted and paginated; the dev token picker and the empty state;
 * the LoRA picker's output and its base-model warning.
 */

// a browser drives real uploads on a shared 2-core machine: generous, never tight
vi.setConfig({ testTimeout: 60_000 });
/** expect.poll with room for a loaded machine (its default gives up after 1 s). */
const eventually = <T>(read: () => Promise<T> | T) => expect.poll(read, { timeout: 20_000, interval: 100 });

let server: TestServer;
let browser: Browser;
const owner = newUserId();
let ownerToken: string;

const STYLES = ['ink', 'neon', 'oil'] as const;
/** LoRA i: "<style> style <i>", tags style (i%3==0) and portrait (i%5==0), SDXL when i%4==0, bigger and newer with i. */
const nameOf = (i: number) => `${STYLES[i % 3]} style ${String(i).padStart(2, '0')}`;

beforeAll(async () => {
  buildStudioIfStale();
  [server, browser] = await Promise.all([startTestServer({}, { studioDevTokens: true }), launchChromium()]);
  ownerToken = await server.tokens.user(owner);
  const start = Date.parse('2026-01-01T00:00:00Z');
  // ten at a time: the seeding is real rows and blobs
  for (let batch = 0; batch < 60; batch += 10) {
    await Promise.all(
      Array.from({ length: 10 }, (_, k) => batch + k).map((i) =>
        seedLora(server.app, owner, {
          name: nameOf(i),
          tags: [...(i % 3 === 0 ? ['style'] : []), ...(i % 5 === 0 ? ['portrait'] : [])],
          baseModel: i % 4 === 0 ? 'SDXL' : 'SD1',
          bytes: sizedLora(i),
          createdAt: new Date(start + i * 60_000),
        }),
      ),
    );
  }
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

const names = (page: Page) => page.getByTestId('lora-item').locator('.card__name, th button').allInnerTexts();
const status = (page: Page) => page.getByTestId('page-status');

describe('the library page', () => {
  it('loads, paginates, searches as you type, filters by tag chips and base model, sorts both ways, and shows a list view', async () => {
    const { context, page, errors } = await signedInPage(browser, server.url, ownerToken);
    await eventually(() => status(page).innerText()).toBe('Page 1 of 3 · 1–24 of 60 LoRAs');
    expect((await names(page))[0]).toBe(nameOf(59)); // newest first by default
    expect(await names(page)).toHaveLength(24);
    await screenshot(page, 'library-grid-1280');

    await page.getByRole('button', { name: 'Next page' }).click();
    await eventually(() => status(page).innerText()).toBe('Page 2 of 3 · 25–48 of 60 LoRAs');
    expect((await names(page))[0]).toBe(nameOf(35));
    await page.getByRole('button', { name: 'Next page' }).click();
    await eventually(() => status(page).innerText()).toBe('Page 3 of 3 · 49–60 of 60 LoRAs');
    expect(await names(page)).toHaveLength(12);
    expect(await page.getByRole('button', { name: 'Next page' }).isDisabled()).toBe(true);

    // typing waits for the debounce, then back to page 1 of the matches
    await page.getByLabel('Search by name').pressSequentially('NEON', { delay: 30 });
    await eventually(() => status(page).innerText()).toBe('Page 1 of 1 · 1–20 of 20 LoRAs');
    expect((await names(page)).every((n) => n.startsWith('neon'))).toBe(true);

    await page.getByRole('button', { name: 'portrait', exact: true }).click();
    await eventually(() => names(page)).toEqual([nameOf(55), nameOf(40), nameOf(25), nameOf(10)]);
    await screenshot(page, 'library-search-and-tag');

    await page.getByLabel('Search by name').fill('');
    await page.getByLabel('Base model').selectOption('SDXL');
    await eventually(() => names(page)).toEqual([nameOf(40), nameOf(20), nameOf(0)]);

    await page.getByRole('button', { name: 'portrait', exact: true }).click(); // off again
    await page.getByLabel('Base model').selectOption('');
    await page.getByLabel('Sort by').selectOption('NAME');
    await page.getByLabel('Order').selectOption('ASC');
    await eventually(async () => (await names(page))[0]).toBe(nameOf(0));
    await page.getByLabel('Sort by').selectOption('SIZE');
    await page.getByLabel('Order').selectOption('DESC');
    await eventually(async () => (await names(page))[0]).toBe(nameOf(59));

    await page.getByRole('button', { name: 'List' }).click();
    await eventually(() => page.getByRole('table').count()).toBe(1);
    expect(await page.getByRole('columnheader').allInnerTexts()).toEqual(['Name', 'Base model', 'Size', 'Added', 'Last used']);
    await screenshot(page, 'library-list-1280');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('at 390 px the page has no horizontal scroll and the details open with their facts', async () => {
    const { context, page, errors } = await signedInPage(browser, server.url, ownerToken, PHONE);
    await eventually(() => status(page).innerText()).toMatch(/of 60 LoRAs/);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    await page.getByRole('button', { name: nameOf(59) }).click();
    const details = page.getByTestId('details');
    await eventually(() => details.getByTestId('autov2').innerText()).toMatch(/^[0-9a-f]{10}$/);
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    await screenshot(page, 'library-details-390');
    expect(errors).toEqual([]);
    await context.close();
  });

  it('a token the API refuses (forged here) sends the page back to sign-in', async () => {
    const forged = `${ownerToken.slice(0, ownerToken.lastIndexOf('.'))}.${'A'.repeat(43)}`;
    const { context, page, errors } = await signedInPage(browser, server.url, forged);
    await eventually(() => page.getByRole('heading', { name: 'Sign in to your LoRA library' }).count()).toBe(1);
    expect(await page.evaluate(() => sessionStorage.getItem('lora-vault.studio.token'))).toBeNull();
    expect(errors).toEqual([]);
    await context.close();
  });

  it('the dev token picker signs in a new user, who sees the empty state explaining LoRAs', async () => {
    const { context, page, errors } = await signedInPage(browser, server.url, null);
    await page.getByRole('button', { name: 'Sign in as a new, empty user' }).click();
    const empty = page.getByTestId('empty-state');
    await eventually(() => empty.innerText()).toMatch(/Your library is empty[\s\S]*low-rank adaptation[\s\S]*drag its \.safetensors/);
    await screenshot(page, 'library-empty');
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe('the LoRA picker', () => {
  it('emits {"lora_source":"user","lora_identifier":"<id>"} and warns when the base model does not match the workflow', async () => {
    const userId = newUserId();
    const sdxl = await seedLora(server.app, userId, { name: 'Picker SDXL look', baseModel: 'SDXL' });
    const sd1 = await seedLora(server.app, userId, { name: 'Picker SD1 look', baseModel: 'SD1' });
    const hostile = '<img src=x onerror="window.__pwned=1"> look';
    await seedLora(server.app, userId, { name: hostile, tags: ['<script>window.__pwned=2</script>'], baseModel: 'SD1' });
    const { context, page, errors } = await signedInPage(browser, server.url, await server.tokens.user(userId), DESKTOP);
    await page.getByRole('link', { name: 'LoRA picker' }).click();
    await page.getByLabel("This workflow's base model").selectOption('SDXL');
    await page.getByLabel('Find a LoRA').fill('look');
    await page.getByRole('radio', { name: /Picker SD1 look/ }).check();
    await expect
      .poll(() => page.getByTestId('picker-output').innerText())
      .toBe(JSON.stringify({ lora_source: 'user', lora_identifier: sd1.id }));
    expect(await page.getByTestId('picker-warning').innerText()).toMatch(/made for SD1, but this workflow uses SDXL/);
    await screenshot(page, 'picker-mismatch');

    // names and tags are text, never markup
    expect(await page.getByRole('radio', { name: hostile }).count()).toBe(1);
    expect(await page.evaluate(() => (window as { __pwned?: number }).__pwned)).toBeUndefined();
    await page.getByRole('radio', { name: /Picker SDXL look/ }).check();
    await eventually(() => page.getByTestId('picker-output').innerText()).toBe(`{"lora_source":"user","lora_identifier":"${sdxl.id}"}`);
    expect(await page.getByTestId('picker-warning').count()).toBe(0);
    expect(errors).toEqual([]);
    await context.close();
  });
});
