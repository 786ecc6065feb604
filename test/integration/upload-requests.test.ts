import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { capturingLogger } from '../testkit/log-capture.ts';
import { sdxlLora } from '../testkit/lora-files.ts';
import { MULTIPART_END, multipartPart as part, postRawMultipart, UPLOAD_MUTATION } from '../testkit/multipart.ts';
import { newUser } from '../testkit/seed.ts';
import { startTestServer, type TestServer } from '../testkit/server.ts';
import { expectNothingStored as expectNothingStoredIn } from '../testkit/stored.ts';

/**
 * Malformed GraphQL multipart requests, sent byte for byte over real HTTP (THREATS.md row 7):
 * each is a 400 with `extensions.code` BAD_USER_INPUT, nothing is stored, the server logs no
 * error (no stack trace), and no internal object shows in a message.
 */

const { logger, lines: logs } = capturingLogger('debug');

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({}, { logger });
});
afterAll(() => server?.stop());

const errorLogs = () => logs.filter((l) => l.level >= 50);

const user = () => newUser(server);

const expectNothingStored = (userId: string) => expectNothingStoredIn(server.app, userId);

const ops = (variables: Record<string, unknown> = { file: null }, query = UPLOAD_MUTATION) => JSON.stringify({ query, variables });
const MAP = '{"0":["variables.file"]}';
const FILE = sdxlLora();
const file = (name = '0') => part(name, FILE, 'style.safetensors');
const body = (...parts: (Buffer | string)[]) => Buffer.concat([...parts.map((p) => Buffer.from(p)), Buffer.from(MULTIPART_END)]);

describe('malformed multipart requests: 400 BAD_USER_INPUT, nothing stored, no error logged', () => {
  it.each([
    ['operations missing', () => body(part('map', MAP), file())],
    ['map missing (file follows operations)', () => body(part('operations', ops()), file())],
    ['map missing (no file either)', () => body(part('operations', ops()))],
    ['no parts at all', () => body()],
    ['operations not JSON', () => body(part('operations', '{nope'), part('map', MAP), file())],
    ['operations not an object', () => body(part('operations', '42'), part('map', MAP), file())],
    ['operations a batch (array)', () => body(part('operations', `[${ops()}]`), part('map', '{"0":["0.variables.file"]}'), file())],
    ['map not JSON', () => body(part('operations', ops()), part('map', '{"0":'), file())],
    ['map not an object', () => body(part('operations', ops()), part('map', '["variables.file"]'), file())],
    ['map entry not an array', () => body(part('operations', ops()), part('map', '{"0":"variables.file"}'), file())],
    ['map path empty', () => body(part('operations', ops()), part('map', '{"0":[""]}'), file())],
    ['map path into nothing', () => body(part('operations', ops()), part('map', '{"0":["variables.nope.deeper"]}'), file())],
    ['map path __proto__', () => body(part('operations', ops()), part('map', '{"0":["__proto__.polluted"]}'), file())],
    [
      'map path constructor.prototype',
      () => body(part('operations', ops()), part('map', '{"0":["constructor.prototype.polluted"]}'), file()),
    ],
    ['map references a part that is not sent', () => body(part('operations', ops()), part('map', MAP), file('1'))],
    ['file part missing', () => body(part('operations', ops()), part('map', MAP))],
    ['file part duplicated', () => body(part('operations', ops()), part('map', MAP), file(), file())],
    ['an extra, unmapped file', () => body(part('operations', ops()), part('map', MAP), file(), file('1'))],
    [
      'two files mapped',
      () => body(part('operations', ops()), part('map', '{"0":["variables.file"],"1":["variables.name"]}'), file(), file('1')),
    ],
    ['operations duplicated', () => body(part('operations', ops()), part('operations', ops()), part('map', MAP), file())],
    ['map duplicated', () => body(part('operations', ops()), part('map', MAP), part('map', MAP), file())],
    ['map before operations', () => body(part('map', MAP), part('operations', ops()), file())],
    ['file before map', () => body(part('operations', ops()), file(), part('map', MAP))],
    ['an unknown field', () => body(part('operations', ops()), part('map', MAP), part('extra', 'x'), file())],
    ['a field after the file', () => body(part('operations', ops()), part('map', MAP), file(), part('extra', 'x'))],
    [
      'the file where a String is expected',
      () => body(part('operations', ops()), part('map', '{"0":["variables.file","variables.name"]}'), file()),
    ],
    [
      'a string where the Upload is expected',
      () => body(part('operations', ops({ file: 'x' })), part('map', '{"0":["variables.name"]}'), file()),
    ],
    ['no closing boundary', () => Buffer.concat([part('operations', ops()), part('map', MAP)])],
  ])('%s', async (_name, build) => {
    const { id, token } = await user();
    logs.length = 0;
    const res = await postRawMultipart({ url: server.graphqlUrl, token, body: build() });
    expect(res.aborted, res.text).toBe(false);
    expect(res.status, res.text).toBe(400);
    expect(res.body?.errors?.[0]?.extensions?.code, res.text).toBe('BAD_USER_INPUT');
    expect(res.text).not.toMatch(/promise|resolve|\[function|Upload \{|FileUpload|createReadStream|\bat \S+ \(/i);
    expect(res.body?.data?.uploadLora ?? null).toBeNull();
    expect(errorLogs(), JSON.stringify(errorLogs())).toEqual([]);
    expect(Object.prototype).not.toHaveProperty('polluted');
    await expectNothingStored(id);
  });
});

describe('variables that do not fit the Upload scalar get a clean message', () => {
  it('a string sent as the Upload in a JSON request', async () => {
    const { token } = await user();
    logs.length = 0;
    const res = await server.gql(UPLOAD_MUTATION, { file: 'x' }, { token, headers: { 'x-graphql-yoga-csrf': '1' } });
    expect(res.body.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(res.body.errors?.[0]?.message).toBe('Variable "$file" got invalid value "x"; Expected type Upload.');
    expect(errorLogs()).toEqual([]);
  });

  it('the file mapped onto a String variable names the file, not the internal object', async () => {
    const { token } = await user();
    const res = await postRawMultipart({
      url: server.graphqlUrl,
      token,
      body: body(part('operations', ops({ file: null, name: null })), part('map', '{"0":["variables.name"]}'), file()),
    });
    expect(res.status, res.text).toBe(400);
    expect(res.body?.errors?.[0]?.extensions?.code).toBe('BAD_USER_INPUT');
    expect(res.body?.errors?.map((e: { message: string }) => e.message).join('\n')).toMatch(/\$name.*uploaded file/);
    expect(res.text).not.toMatch(/promise|resolve|\[function/i);
  });
});
