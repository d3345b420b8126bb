//! What a session charges beyond its line items, in Stripe's wire format (`amount_subtotal`,
//! `total_details`, `amount_total`): a promotion code the buyer entered on the page, and the tax
//! Stripe Tax adds when `automatic_tax[enabled]` is set. Stripe computes tax from the address the
//! buyer enters; the emulator charges one flat rate so a test knows the figure in advance.

use serde_json::{Value, json};

/// The emulator's stand-in for Stripe Tax: a flat rate on the discounted subtotal, tax exclusive
/// (added on top, as Stripe does for prices without a `tax_behavior`).
pub const EMULATED_TAX_PERCENT: i64 = 10;

/// The buyer enters a promotion code worth `percent_off` (1 to 100) of the subtotal. Only an open
/// session created with `allow_promotion_codes=true` has the field for it.
pub fn enter_promotion_code(session: &mut Value, code: &str, percent_off: i64) -> bool {
    if session["status"] != "open" || session["allow_promotion_codes"] != true || !(1..=100).contains(&percent_off) {
        return false;
    }
    let subtotal = session["amount_subtotal"].as_i64().unwrap_or_default();
    let discount = subtotal * percent_off / 100;
    session["total_details"]["amount_discount"] = json!(discount);
    session["discounts"] = json!([{
        "coupon": format!("coupon_{code}"),
        "promotion_code": format!("promo_{code}"),
    }]);
    settle_total(session);
    true
}

/// What a code typed on the hosted page is worth. Stripe looks codes up among the account's
/// promotion codes; the emulator has none to look up, so a code is worth the percentage it ends
/// with: `SAVE20` takes 20 % off, `HALF50` 50 %. Letters and digits, 3 to 20 of them, ending in 1
/// to 100; anything else is not a valid code.
pub fn promotion_code_value(code: &str) -> Option<(String, i64)> {
    let code = code.trim().to_ascii_uppercase();
    if !(3..=20).contains(&code.len()) || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let digits = code.len() - code.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let percent: i64 = code[code.len() - digits..].parse().ok()?;
    (digits < code.len() && (1..=100).contains(&percent)).then_some((code, percent))
}

/// Sets the tax (when Stripe Tax is on) and the total from the subtotal and the discount, capping
/// the discount at the subtotal (a trial's subtotal is 0).
pub fn settle_total(session: &mut Value) {
    let subtotal = session["amount_subtotal"].as_i64().unwrap_or_default();
    let discount = session["total_details"]["amount_discount"]
        .as_i64()
        .unwrap_or_default()
        .min(subtotal);
    let shipping = session["total_details"]["amount_shipping"].as_i64().unwrap_or_default();
    let taxed = session["automatic_tax"]["enabled"] == true;
    let tax = if taxed {
        // Rounded half up, to the minor unit.
        ((subtotal - discount) * EMULATED_TAX_PERCENT + 50) / 100
    } else {
        0
    };
    session["total_details"] = json!({
        "amount_discount": discount,
        "amount_shipping": shipping,
        "amount_tax": tax,
    });
    session["amount_total"] = json!(subtotal - discount + shipping + tax);
    if taxed {
        session["automatic_tax"]["status"] = json!("complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_session(allow_promotion_codes: bool, tax: bool) -> Value {
        json!({
            "status": "open",
            "allow_promotion_codes": allow_promotion_codes,
            "amount_subtotal": 2000,
            "amount_total": 2000,
            "automatic_tax": { "enabled": tax, "liability": null, "status": null, "provider": null },
            "total_details": { "amount_discount": 0, "amount_shipping": 0, "amount_tax": 0 },
        })
    }

    #[test]
    fn a_typed_code_is_worth_the_percentage_it_ends_with() {
        assert_eq!(promotion_code_value(" save20 "), Some(("SAVE20".into(), 20)));
        assert_eq!(promotion_code_value("FREE100"), Some(("FREE100".into(), 100)));
        for invalid in [
            "SAVE",
            "20",
            "SAVE0",
            "SAVE101",
            "SA-20",
            "",
            "X1",
            "ABCDEFGHIJKLMNOPQRS20",
        ] {
            assert_eq!(promotion_code_value(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn a_promotion_code_lowers_the_total_and_tax_is_added_on_what_is_left() {
        let mut session = open_session(true, true);
        assert!(enter_promotion_code(&mut session, "SAVE25", 25));
        assert_eq!(session["total_details"]["amount_discount"], 500);
        assert_eq!(session["total_details"]["amount_tax"], 150);
        assert_eq!(session["amount_total"], 1650);
        assert_eq!(session["amount_subtotal"], 2000);
    }

    #[test]
    fn a_code_is_refused_where_the_session_takes_none() {
        let mut session = open_session(false, false);
        assert!(!enter_promotion_code(&mut session, "SAVE25", 25));
        assert_eq!(session["amount_total"], 2000);
    }
}
