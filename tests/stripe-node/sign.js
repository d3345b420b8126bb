// Prints a Stripe-Signature header for a payload, made by the official `stripe` library's own test
// helper, so the Rust verifier is checked against Stripe's implementation rather than our own.
// Usage: node sign.js <webhook secret> <payload>
const Stripe = require("stripe");

const [secret, payload] = process.argv.slice(2);
if (!secret || payload === undefined) {
  console.error("usage: node sign.js <secret> <payload>");
  process.exit(2);
}
const stripe = new Stripe("sk_test_unused");
process.stdout.write(stripe.webhooks.generateTestHeaderString({ payload, secret }));
