// The person at a test authorization server, simulated: logs in as `accountId` and consents to
// every scope the request asks for (the provider's own resource server settings decide what is
// granted), then sends the browser on. Shared by provider.mjs and mcp_as.mjs.
export async function autoConsent(provider, ctx, accountId) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'login') {
    result = { login: { accountId } };
  } else {
    const grant = details.grantId ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const d = details.prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    for (const [ind, scopes] of Object.entries(d.missingResourceScopes || {})) grant.addResourceScope(ind, scopes.join(' '));
    result = { consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.redirect(to);
}
