// `sqlx::migrate!` embeds ./migrations at compile time; without this, adding a migration file does
// not rebuild the crate and the binary keeps running the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
