//! Host discovery: read a sysfs tree into a [`Host`] snapshot.

mod aux;
mod classes;
pub mod layout;
mod majors;
mod model;
mod models;
mod read;
mod sysfs;

pub use classes::is_representor;
pub use majors::Majors;
pub use model::*;
pub use models::model_name;
pub use read::{DiscoverError, Reread, Scope, discover, refresh, reread};
pub use sysfs::is_bdf;
