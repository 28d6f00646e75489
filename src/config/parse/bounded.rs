//! Building a `serde_json::Value` under a memory budget.
//!
//! A parser's own limits bound its input, not what an alias (YAML `*ref`) or a dense list
//! expands into: 550 bytes of YAML aliases become a tree of hundreds of MB. So the tree is
//! built here, charging every node and every string byte against one budget, and the parse
//! stops with an error the moment the budget runs out, whatever the syntax.
//!
//! The budget lives in a thread-local because the YAML parser only deserializes types, not
//! seeds; [`parse_bounded`] sets it for one parse.

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Bytes a parsed config may occupy: a real one needs a few KiB; the daemon's limit is 64 MiB.
pub(super) const TREE_BUDGET: usize = 4 << 20;

/// What a node costs besides its string bytes: the `Value` itself plus container overhead.
const NODE_COST: usize = 64;

thread_local! {
    static LEFT: Cell<usize> = const { Cell::new(0) };
}

/// Run one parse `f` that deserializes [`BoundedValue`]s, with a fresh budget.
pub(super) fn parse_bounded<T>(f: impl FnOnce() -> T) -> T {
    LEFT.set(TREE_BUDGET);
    let out = f();
    LEFT.set(0);
    out
}

/// A value deserialized under the budget of the current [`parse_bounded`].
pub(super) struct BoundedValue(pub(super) Value);

impl<'de> Deserialize<'de> for BoundedValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Bounded).map(BoundedValue)
    }
}

/// Deserializes one value, charging it against the budget.
struct Bounded;

impl Bounded {
    fn charge<E: Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = NODE_COST.saturating_add(bytes);
        match LEFT.get().checked_sub(cost) {
            Some(rest) => {
                LEFT.set(rest);
                Ok(())
            }
            None => Err(E::custom(format_args!(
                "the document expands to more than {} MiB (aliases or too many values); \
                 a config needs a few KiB",
                TREE_BUDGET >> 20
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        // What serde_json's own `Value` does with NaN and infinities.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: Error>(self, v: String) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_none<E: Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_unit<E: Error>(self) -> Result<Value, E> {
        self.visit_none()
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Bounded)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let value = map.next_value_seed(Bounded)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A map key, read as a string the way serde_json's own `Value` reads keys (a YAML `1:` is
/// the text "1").
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_string(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<String, E> {
        Bounded.charge(v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: Error>(self, v: String) -> Result<String, E> {
        Bounded.charge(v.len())?;
        Ok(v)
    }
}
