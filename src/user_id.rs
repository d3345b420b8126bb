//! What a user id may be, wherever one comes in: a user token's `sub` and the server API's
//! `userId` follow the same rule, so an id accepted by one is accepted by the other.

pub const MAX_USER_ID_LEN: usize = 255;

/// 1 to 255 bytes, whatever they are but NUL, which no stored id can hold: a buyer the token
/// admits must be one the server API can name.
pub fn is_valid(user_id: &str) -> bool {
    !user_id.is_empty() && user_id.len() <= MAX_USER_ID_LEN && !user_id.contains('\0')
}
