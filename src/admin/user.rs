//! A user as support needs to see them: what they can spend and what it is made of, their ledger
//! a page at a time, their entitlements and their orders.

use sqlx::PgPool;

use crate::{
    credits::{self, Balance, GrantRow, LedgerRow},
    store::{
        credit_ledger,
        entitlements::{self, Held},
        order_history::{self, OrderBrief},
    },
};

pub const LEDGER_PAGE: i64 = 50;
const MAX_ORDERS: i64 = 100;

pub struct UserPage {
    pub user_id: String,
    pub balance: Balance,
    pub grants: Vec<GrantRow>,
    /// Newest first, one page.
    pub ledger: Vec<LedgerRow>,
    /// The cursor of the next (older) page, when there is one.
    pub older_than: Option<i64>,
    pub entitlements: Vec<Held>,
    pub orders: Vec<OrderBrief>,
}

impl UserPage {
    /// Nothing at all is recorded for the id.
    pub fn is_unknown(&self) -> bool {
        self.grants.is_empty() && self.ledger.is_empty() && self.entitlements.is_empty() && self.orders.is_empty()
    }
}

/// The user's page, with the ledger rows older than `before` (the latest when none).
pub async fn user_page(db: &PgPool, user_id: &str, before: Option<i64>) -> Result<UserPage, sqlx::Error> {
    // The balance first: it writes what fell due, so the grants read after it are spendable.
    let balance = credits::balance(db, user_id).await?;
    let grants = credits::spendable_grants(db, user_id).await?;
    // One row more than a page tells whether an older page exists.
    let mut ledger = credit_ledger::rows_before(db, user_id, before, LEDGER_PAGE + 1).await?;
    let older_than = match ledger.len() as i64 > LEDGER_PAGE {
        true => {
            ledger.truncate(LEDGER_PAGE as usize);
            ledger.last().map(|row| row.id)
        }
        false => None,
    };
    let entitlements = entitlements::held(db, user_id).await?;
    let orders = order_history::of_user(db, user_id, MAX_ORDERS).await?;
    Ok(UserPage {
        user_id: user_id.to_owned(),
        balance,
        grants,
        ledger,
        older_than,
        entitlements,
        orders,
    })
}
