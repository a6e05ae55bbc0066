// A minimal Lambda Runtime API loop for a Node handler, to run another relay (the AWS sample's,
// for the comparison in docs/data-plane.md, *Cost*) on `outbox-bench-relay`'s harness:
// next -> handler -> response, one kept-alive connection, as the Node runtime does.
//
// Next to this file: `index.mjs`, exporting `handler` (the sample's relay handler transcribed
// to JavaScript; not part of this repository), and its packages:
//   npm install @aws-sdk/client-eventbridge@3.1169.0 @aws-sdk/util-dynamodb@3.1169.0
// then, with `bootstrap` a script running `exec node <this file>`:
//   outbox-bench-relay --bootstrap ./bootstrap --opaque-detail --batch 10 --throttle 0
import http from 'node:http';
import { handler } from './index.mjs';

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = body === undefined
      ? {}
      : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = http.request({ host, port, method, path, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

for (;;) {
  const next = await call('GET', '/2018-06-01/runtime/invocation/next');
  const id = next.headers['lambda-runtime-aws-request-id'];
  process.env._X_AMZN_TRACE_ID = next.headers['lambda-runtime-trace-id'] || '';
  try {
    const result = await handler(JSON.parse(next.body));
    // Lambda counts a null response as the whole batch done; the harness wants it spelled out.
    const response = JSON.stringify(result ?? { batchItemFailures: [] });
    await call('POST', `/2018-06-01/runtime/invocation/${id}/response`, response);
  } catch (e) {
    const error = JSON.stringify({ errorType: e.name, errorMessage: e.message });
    await call('POST', `/2018-06-01/runtime/invocation/${id}/error`, error);
  }
}
