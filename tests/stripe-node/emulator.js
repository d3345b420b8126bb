// Drives the Stripe emulator with the official `stripe` library, pointed at the emulator's own port
// with a host and port only, as one points it at stripe-mock: create, retrieve and expire Checkout
// Sessions, be refused as Stripe refuses, and list events with the `type` filter and pagination.
// Prints the ids it made as JSON; any failed assertion exits non-zero.
// Usage: node emulator.js <port>
const assert = require("node:assert/strict");
const Stripe = require("stripe");

const port = Number(process.argv[2]);
if (!port) {
  console.error("usage: node emulator.js <port>");
  process.exit(2);
}
const stripe = new Stripe("sk_test_emulator", { host: "127.0.0.1", port, protocol: "http" });

const session = {
  mode: "payment",
  success_url: "https://example.com/done",
  line_items: [
    { quantity: 1, price_data: { currency: "usd", unit_amount: 500, product_data: { name: "100 credits" } } },
  ],
  metadata: { order_id: "node-1" },
};

async function main() {
  const first = await stripe.checkout.sessions.create(session);
  assert.equal(first.object, "checkout.session");
  assert.equal(first.status, "open");
  assert.equal(first.amount_total, 500);
  assert.deepEqual(first.metadata, { order_id: "node-1" });
  assert.match(first.lastResponse.requestId, /^req_/);

  const retrieved = await stripe.checkout.sessions.retrieve(first.id);
  assert.equal(retrieved.id, first.id);
  const expired = await stripe.checkout.sessions.expire(first.id);
  assert.equal(expired.status, "expired");

  const second = await stripe.checkout.sessions.create(session);
  await stripe.checkout.sessions.expire(second.id);

  await assert.rejects(stripe.checkout.sessions.create({ ...session, mode: undefined }), (err) => {
    assert.equal(err.type, "StripeInvalidRequestError");
    assert.equal(err.statusCode, 400);
    assert.equal(err.code, "parameter_missing");
    assert.equal(err.param, "mode");
    return true;
  });
  await assert.rejects(stripe.checkout.sessions.retrieve("cs_test_missing"), (err) => {
    assert.equal(err.statusCode, 404);
    assert.equal(err.code, "resource_missing");
    return true;
  });

  // Newest first, one per page, following the cursor.
  const page1 = await stripe.events.list({ limit: 1 });
  assert.equal(page1.object, "list");
  assert.equal(page1.data.length, 1);
  assert.equal(page1.has_more, true);
  assert.equal(page1.data[0].data.object.id, second.id);
  const page2 = await stripe.events.list({ limit: 1, starting_after: page1.data[0].id });
  assert.equal(page2.data.length, 1);
  assert.equal(page2.data[0].data.object.id, first.id);
  assert.equal(page2.has_more, false);

  // The library's own auto-pagination walks the same cursor.
  const walked = [];
  for await (const event of stripe.events.list({ limit: 1 })) walked.push(event.id);
  assert.deepEqual(walked, [page1.data[0].id, page2.data[0].id]);

  const expiredEvents = await stripe.events.list({ type: "checkout.session.*" });
  assert.equal(expiredEvents.data.length, 2);
  assert.ok(expiredEvents.data.every((e) => e.type === "checkout.session.expired"));
  const invoices = await stripe.events.list({ type: "invoice.paid" });
  assert.equal(invoices.data.length, 0);

  process.stdout.write(JSON.stringify({ sessions: [first.id, second.id], events: walked }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
