//! Amounts as a buyer reads them: `$5.00`, `€5.00`, `500 JPY`, `5.000 KWD`, `5.00 CHF`.

/// Stripe's zero-decimal currencies: an amount of 500 is 500 of them, not 5.00.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
];
/// Stripe's three-decimal currencies: an amount of 5000 is 5.000.
const THREE_DECIMAL: &[&str] = &["bhd", "jod", "kwd", "omr", "tnd"];

/// Formats `amount` minor units of `currency` (an ISO code, any case) with grouped thousands. Only
/// the dollar, euro and pound get a symbol: `$` alone is ambiguous for most other currencies, and
/// the code after the number is never misread.
pub fn format_amount(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_lowercase();
    let decimals = if ZERO_DECIMAL.contains(&code.as_str()) {
        0
    } else if THREE_DECIMAL.contains(&code.as_str()) {
        3
    } else {
        2
    };
    let sign = if amount < 0 { "-" } else { "" };
    let number = decimal(amount.unsigned_abs(), decimals);
    match code.as_str() {
        "usd" => format!("{sign}${number}"),
        "eur" => format!("{sign}€{number}"),
        "gbp" => format!("{sign}£{number}"),
        _ => format!("{sign}{number} {}", code.to_ascii_uppercase()),
    }
}

fn decimal(minor: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    let whole = group_thousands(minor / scale);
    match decimals {
        0 => whole,
        _ => format!("{whole}.{:0width$}", minor % scale, width = decimals as usize),
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::format_amount;

    #[test]
    fn dollars_euros_and_pounds_have_their_symbol_and_two_decimals() {
        assert_eq!(format_amount(500, "usd"), "$5.00");
        assert_eq!(format_amount(500, "USD"), "$5.00");
        assert_eq!(format_amount(5, "usd"), "$0.05");
        assert_eq!(format_amount(0, "usd"), "$0.00");
        assert_eq!(format_amount(500, "eur"), "€5.00");
        assert_eq!(format_amount(1999, "gbp"), "£19.99");
    }

    #[test]
    fn zero_decimal_currencies_have_no_decimals() {
        assert_eq!(format_amount(500, "jpy"), "500 JPY");
        assert_eq!(format_amount(15000, "krw"), "15,000 KRW");
        assert_eq!(format_amount(1, "vnd"), "1 VND");
        assert_eq!(format_amount(990, "clp"), "990 CLP");
    }

    #[test]
    fn three_decimal_currencies_have_three() {
        assert_eq!(format_amount(5000, "kwd"), "5.000 KWD");
        assert_eq!(format_amount(1, "bhd"), "0.001 BHD");
        assert_eq!(format_amount(12345, "tnd"), "12.345 TND");
    }

    #[test]
    fn other_currencies_have_two_decimals_and_their_code() {
        assert_eq!(format_amount(500, "chf"), "5.00 CHF");
        assert_eq!(format_amount(500, "xyz"), "5.00 XYZ");
        assert_eq!(format_amount(123_456_789, "cad"), "1,234,567.89 CAD");
    }

    #[test]
    fn thousands_are_grouped_and_a_negative_amount_keeps_its_sign() {
        assert_eq!(format_amount(100_000, "usd"), "$1,000.00");
        assert_eq!(format_amount(99_999, "usd"), "$999.99");
        assert_eq!(format_amount(-500, "usd"), "-$5.00");
        assert_eq!(format_amount(i64::MIN, "jpy"), "-9,223,372,036,854,775,808 JPY");
    }
}
