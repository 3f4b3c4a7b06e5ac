// A real OAuth 2.1 authorization server for MCP clients (npm oidc-provider), as an MCP host's
// identity provider would be: dynamic client registration (RFC 7591), PKCE, resource indicators
// (RFC 8707) and JWT access tokens (RFC 9068) for one resource, airlock's MCP endpoint.
//
// Environment:
//   RESOURCE    the MCP endpoint's URI (airlock's `audience` for this issuer)
//   SCOPES      the scopes a person consents to at first, space-separated (default: none of
//               airlock's; the client asks, the provider grants those also listed here)
//   SUBJECT     the account every login signs in as (default `mcp-user`)
//   ACCESS_TTL  access token lifetime in seconds (default 600)
//
// Logins and consent happen without a page (the person is simulated): the provider grants the
// requested scopes of airlock that are in the consented set, and drops the others. POST /_consent?add=SCOPE widens that
// set (the person agrees to more at the next authorization, a step-up); GET /_stats reports the
// authorizations, registrations and last authorization request.
//
// Prints one JSON line on stdout once listening: {"issuer", "jwks_uri", "control"}.
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';
import { autoConsent } from './consent.mjs';

const resource = process.env.RESOURCE;
if (!resource) throw new Error('RESOURCE is required');
const subject = process.env.SUBJECT || 'mcp-user';
const accessTtl = Number(process.env.ACCESS_TTL || 600);
const tools = ['query_db', 'http_request', 'send_email', 'run_command', 'share_secret', 'request_lease', 's3_object', 'connect_account', 'connect_status', 'request_secret', 'request_status'];
const airlockScopes = tools.map((t) => `airlock:${t}`);
const consented = new Set((process.env.SCOPES || '').split(/\s+/).filter(Boolean));

const listen = (server) => new Promise((res) => server.listen(0, '127.0.0.1', () => res(server.address().port)));
const op = http.createServer();
const port = await listen(op);
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'mcp-as-1', use: 'sig', alg: 'RS256' };

const stats = { authorizations: 0, registrations: 0, token_requests: 0, last_authorize: null };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  scopes: ['openid', 'offline_access', ...airlockScopes],
  pkce: { required: () => true },
  ttl: { AccessToken: accessTtl, AuthorizationCode: 60, Grant: 86400, RefreshToken: 86400, Session: 86400, Interaction: 600 },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== resource) throw new Provider.errors.InvalidTarget();
        // What the person agreed to so far: requested scopes beyond it are not granted.
        return {
          scope: airlockScopes.filter((s) => consented.has(s)).join(' '),
          audience: resource,
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  interactions: { url: (_ctx, i) => `/interaction/${i.uid}` },
  findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
});
provider.proxy = false;

provider.on('registration_create.success', () => { stats.registrations += 1; });
provider.on('authorization.success', () => { stats.authorizations += 1; });

provider.use(async (ctx, next) => {
  if (ctx.path === '/_stats') { ctx.body = stats; return; }
  if (ctx.path === '/_consent' && ctx.method === 'POST') {
    for (const s of (ctx.query.add || '').split(/\s+/).filter(Boolean)) consented.add(s);
    ctx.body = { consented: [...consented] };
    return;
  }
  if (ctx.path === '/auth' && ctx.method === 'GET') {
    const q = ctx.query;
    stats.last_authorize = { resource: q.resource, scope: q.scope, code_challenge_method: q.code_challenge_method };
  }
  if (ctx.path === '/token' && ctx.method === 'POST') stats.token_requests += 1;
  if (ctx.path.startsWith('/interaction/')) {
    await autoConsent(provider, ctx, subject);
    return;
  }
  await next();
});

op.on('request', provider.callback());

console.log(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks`, control: issuer }));
