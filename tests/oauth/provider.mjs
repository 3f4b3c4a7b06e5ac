// A real OAuth 2.1 / OpenID authorization server for airlock's connected-account tests
// (npm oidc-provider), with a resource server that accepts only its access tokens.
//
// Environment:
//   REDIRECT_URI   the client's one redirect URI (airlock's /oauth/callback)
//   ACCESS_TTL     access token lifetime in seconds (default 3600)
//   AUTO_CONSENT=1 log in as `owner-1` and consent without a page (HTTP-only tests);
//                  otherwise the provider's own login and consent pages (the browser test)
//   TLS_CERT, TLS_KEY  PEM files: the authorization server serves HTTPS (as providers do)
//   ROTATE=0       refresh tokens are not rotated, and a refresh's answer carries no refresh
//                  token at all (as many providers answer)
//
// Prints one JSON line on stdout once listening:
//   {"issuer", "token", "authorize", "revocation", "resource", "rs", "client_id", "client_secret"}
//
// The resource server (rs): GET /api/... answers 200 {"ok":true,"sub":...,"path":...} for a live
// access token issued for it, 401 otherwise; GET /echo/... reflects the Authorization header back
// (a hostile upstream); GET /plain answers {"ok":true} to anyone (the benchmark); GET /_stats counts refreshes, reuses, revoked grants, revocation calls and
// token requests; GET /_tokens lists every code and token it issued; POST /_mode?token=MODE
// makes the token endpoint misbehave (ok, 503, nonjson, slow, invalid_grant) and
// POST /_mode?api=MODE the API (ok, 401-once).
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import Provider from 'oidc-provider';
import { autoConsent } from './consent.mjs';

const accessTtl = Number(process.env.ACCESS_TTL || 3600);
const auto = process.env.AUTO_CONSENT === '1';
const redirect = process.env.REDIRECT_URI;
if (!redirect) throw new Error('REDIRECT_URI is required');

const listen = (server) => new Promise((res) => server.listen(0, '127.0.0.1', () => res(server.address().port)));
const tls = process.env.TLS_CERT && process.env.TLS_KEY;
const op = tls
  ? https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) })
  : http.createServer();
const rs = http.createServer();
const opPort = await listen(op);
const rsPort = await listen(rs);
const issuer = `${tls ? 'https' : 'http'}://127.0.0.1:${opPort}`;
const resource = `http://127.0.0.1:${rsPort}/`;
const client = { client_id: 'airlock-test', client_secret: 'canaryClientSecret_P4s9Vx2Lq7Rm' };

const stats = { refresh: 0, reused: 0, grant_revoked: 0, revocations: 0, token_requests: 0, api_ok: 0, api_refused: 0 };
const mode = { token: 'ok', api: 'ok' };

const provider = new Provider(issuer, {
  clients: [{
    ...client,
    redirect_uris: [redirect],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  scopes: ['openid', 'offline_access', 'api:read'],
  pkce: { required: () => true },
  rotateRefreshToken: process.env.ROTATE !== '0',
  issueRefreshToken: async () => true,
  ttl: { AccessToken: accessTtl, AuthorizationCode: 60, Grant: 86400, RefreshToken: 86400, Session: 86400, Interaction: 600 },
  features: {
    devInteractions: { enabled: !auto },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      useGrantedResource: async () => false,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        return { scope: 'api:read', audience: resource, accessTokenTTL: accessTtl, accessTokenFormat: 'opaque' };
      },
    },
  },
  interactions: auto ? { url: (_ctx, i) => `/interaction/${i.uid}` } : undefined,
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
});
provider.proxy = false;

// Every token value issued (opaque tokens are their jti), for the tests' canary sweeps.
const issued = [];
provider.on('access_token.saved', (t) => issued.push(t.jti));
provider.on('refresh_token.saved', (t) => issued.push(t.jti));
provider.on('authorization_code.saved', (t) => issued.push(t.jti));
provider.on('grant.revoked', () => { stats.grant_revoked += 1; });
provider.on('grant.error', (_ctx, err) => { if (/already used/.test(err.error_description || '')) stats.reused += 1; });
provider.on('grant.success', (ctx) => { if (ctx.oidc.params.grant_type === 'refresh_token') stats.refresh += 1; });

provider.use(async (ctx, next) => {
  if (ctx.path === '/auth' && ctx.method === 'GET') {
    const q = ctx.query;
    stats.last_authorize = { prompt: q.prompt, resource: q.resource, code_challenge_method: q.code_challenge_method, scope: q.scope };
  }
  if (ctx.path === '/token/revocation' && ctx.method === 'POST') stats.revocations += 1;
  if (ctx.path === '/token' && ctx.method === 'POST') {
    stats.token_requests += 1;
    if (mode.token === '503') { ctx.status = 503; ctx.body = 'busy'; return; }
    if (mode.token === 'nonjson') { ctx.status = 400; ctx.type = 'text/html'; ctx.body = '<html>oops</html>'; return; }
    if (mode.token === 'invalid_grant') { ctx.status = 400; ctx.body = { error: 'invalid_grant', error_description: 'grant revoked by test' }; return; }
    if (mode.token === 'slow') await new Promise((r) => setTimeout(r, 3000));
  }
  if (auto && ctx.path.startsWith('/interaction/')) {
    await autoConsent(provider, ctx, 'owner-1');
    return;
  }
  await next();
  if (process.env.ROTATE === '0' && ctx.path === '/token' && ctx.oidc?.params?.grant_type === 'refresh_token' && ctx.body) {
    delete ctx.body.refresh_token;
  }
});

op.on('request', provider.callback());

const json = (res, status, body) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
rs.on('request', async (req, res) => {
  const url = new URL(req.url, resource);
  if (url.pathname === '/_stats') return json(res, 200, stats);
  if (url.pathname === '/_tokens') return json(res, 200, issued);
  if (url.pathname === '/_mode' && req.method === 'POST') {
    for (const k of ['token', 'api']) if (url.searchParams.has(k)) mode[k] = url.searchParams.get(k);
    return json(res, 200, mode);
  }
  const auth = req.headers.authorization || '';
  if (url.pathname.startsWith('/echo')) return json(res, 200, { authorization: auth });
  // The benchmark's upstream: the same constant answer whatever the token.
  if (url.pathname === '/plain') return json(res, 200, { ok: true });
  if (mode.api === '401-once') { mode.api = 'ok'; stats.api_refused += 1; return json(res, 401, { error: 'invalid_token' }); }
  const m = /^Bearer (.+)$/.exec(auth);
  const at = m && await provider.AccessToken.find(m[1]);
  if (!at || at.isExpired || at.aud !== resource) {
    stats.api_refused += 1;
    res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
    return res.end();
  }
  stats.api_ok += 1;
  return json(res, 200, { ok: true, sub: at.accountId, path: url.pathname, scope: at.scope });
});

console.log(JSON.stringify({
  issuer,
  authorize: `${issuer}/auth`,
  token: `${issuer}/token`,
  revocation: `${issuer}/token/revocation`,
  resource,
  rs: `http://127.0.0.1:${rsPort}`,
  ...client,
}));
