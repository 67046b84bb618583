// A Node client of movies.v1.MovieService: calls every RPC once (and a few
// error paths) and prints one JSON object per step, the same steps as the Go
// client in tests/interop/go, for tests/test_interop.py to check. It reports
// what it saw rather than judging it, so it exits 0 whenever it could run.
//
//   node main.js --target=localhost:50051 --token=dev-token --id=ID --slow-id=ID [--latitude=44.85 --longitude=-93.24]
//                [--cacert=ca.pem [--cert=client.pem --key=client.key]]
//
// With --cacert it connects over TLS, trusting that CA; with --cert and --key
// it also presents a client certificate (mTLS).
// The .proto is loaded at run time with @grpc/proto-loader: no generated code.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', '..', 'proto');

const { values: args } = parseArgs({
  options: {
    target: { type: 'string', default: 'localhost:50051' },
    token: { type: 'string', default: '' },
    id: { type: 'string' },
    'slow-id': { type: 'string' },
    // The Nearby point; the default is a theater in the real sample data.
    latitude: { type: 'string', default: '44.85' },
    longitude: { type: 'string', default: '-93.24' },
    cacert: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
  },
});
if (!args.id || !args['slow-id']) {
  console.error('--id and --slow-id are required');
  process.exit(2);
}

// keepCase: field names as in the .proto (page_size, next_page_token).
// google/protobuf/timestamp.proto is built into protobufjs.
const definition = protoLoader.loadSync('movies/v1/movies.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
});
const { MovieService } = grpc.loadPackageDefinition(definition).movies.v1;

// google.rpc.Status and BadRequest, to read the grpc-status-details-bin trailer.
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (origin, target) =>
  target.startsWith('google/protobuf/') ? target : path.join(__dirname, 'protos', target);
rpcRoot.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto'], { keepCase: true });
const Status = rpcRoot.lookupType('google.rpc.Status');
const BadRequest = rpcRoot.lookupType('google.rpc.BadRequest');

function fieldViolations(error) {
  const violations = {};
  for (const bytes of error.metadata?.get('grpc-status-details-bin') ?? []) {
    for (const detail of Status.decode(bytes).details) {
      if (detail.type_url.endsWith('/google.rpc.BadRequest')) {
        for (const v of BadRequest.decode(detail.value).field_violations) {
          violations[v.field] = v.description;
        }
      }
    }
  }
  return violations;
}

// grpc.status maps numbers to names (OK: 0, ...); invert it for the report.
const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, code]) => [code, name]));

function report(step, error, fields = {}) {
  const out = { step, code: CODE_NAMES[error ? error.code : grpc.status.OK] };
  if (error) {
    out.message = error.details;
    const violations = fieldViolations(error);
    if (Object.keys(violations).length > 0) out.field_violations = violations;
  }
  console.log(JSON.stringify({ ...out, ...fields }));
}

// Plaintext without --cacert; TLS trusting only that CA otherwise.
function channelCredentials() {
  if (!args.cacert) return grpc.credentials.createInsecure();
  const read = (file) => (file ? fs.readFileSync(file) : null);
  return grpc.credentials.createSsl(read(args.cacert), read(args.key), read(args.cert));
}

const client = new MovieService(args.target, channelCredentials());

// One unary call as a promise of [error, response]; every step gets a
// deadline, 10 s unless it says otherwise.
function call(method, request, { metadata = new grpc.Metadata(), timeoutMs = 10000 } = {}) {
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + timeoutMs }, (error, response) =>
      resolve([error, response ?? {}]),
    );
  });
}

const ids = (movies) => (movies ?? []).map((m) => m.id);

async function main() {
  let [error, response] = await call('Get', { id: args.id });
  const movie = response.movie ?? {};
  report('get', error, { id: movie.id, title: movie.title, year: movie.year });

  [error] = await call('Get', { id: '000000000000000000000000' });
  report('get_not_found', error);

  [error] = await call('Get', { id: 'xyz' });
  report('get_invalid', error);

  const newMovie = {
    title: 'Interop from Node',
    year: 2024,
    genres: ['Drama'],
    plot: 'A movie written by the Node interop client.',
    imdb: { rating: 7.1, votes: 1500 },
  };
  [error] = await call('Upsert', { movie: newMovie });
  report('upsert_unauthenticated', error);

  const writer = new grpc.Metadata();
  writer.add('authorization', `Bearer ${args.token}`);
  [error, response] = await call('Upsert', { movie: newMovie }, { metadata: writer });
  const stored = response.movie ?? {};
  report('upsert', error, {
    created: response.created ?? false,
    id: stored.id,
    title: stored.title,
    imdb_rating: stored.imdb?.rating,
    lastupdated: stored.lastupdated,
  });

  const [error1, page1] = await call('TopRated', { genre: 'Drama', page_size: 3 });
  report('top_rated', error1, { ids: ids(page1.movies), next_page_token: page1.next_page_token ?? '' });

  const [error2, page2] = await call('TopRated', {
    genre: 'Drama',
    page_size: 3,
    page_token: page1.next_page_token ?? '',
  });
  report('top_rated_page2', error2, { ids: ids(page2.movies), next_page_token: page2.next_page_token ?? '' });

  [error, response] = await call('Nearby', {
    latitude: Number(args.latitude),
    longitude: Number(args.longitude),
    radius_km: 10,
  });
  const theaters = (response.theaters ?? []).map((t) => ({
    theater_id: t.theater?.theater_id ?? 0,
    distance_km: t.distance_km ?? 0,
  }));
  report('nearby', error, { theaters });

  // The caller makes MongoDB slow and passes an uncached id: the 200 ms
  // deadline, sent to the server as grpc-timeout, must end the call.
  const start = Date.now();
  [error] = await call('Get', { id: args['slow-id'] }, { timeoutMs: 200 });
  report('get_deadline', error, { elapsed_ms: Date.now() - start });

  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
