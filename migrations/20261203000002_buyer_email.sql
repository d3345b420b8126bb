-- Where the order's confirmation email goes: the address the buyer gave Stripe's checkout page
-- (the session's `customer_details.email`), kept from the event that completed the session.
alter table orders add column buyer_email text;
