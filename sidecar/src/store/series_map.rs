//! A family's series by canonical label text, in insertion order, at a few bytes per series
//! over the text and the state.
//!
//! What a map of `Box<str>` keys would pay per series and this one does not: a heap block per
//! key (the allocator rounds a 50-byte key up to 64 and adds its header), a 16-byte fat
//! pointer, a stored 8-byte hash and an 8-byte index. Here every key is a range of one text
//! buffer (`u32` start and length), the index is a `u32` per slot of a `HashTable` whose hashes
//! are recomputed from the text when it grows, and removal compacts the text once half of it
//! is dead. Order is insertion order, kept by removal (`retain`), as `/metrics` renders it.

use super::SeriesState;
use crate::hashing::HashState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// The most key text a family holds: offsets are `u32`.
pub(super) const MAX_KEY_TEXT: usize = u32::MAX as usize;

/// One series: where its key is in the text, and its state.
#[derive(Clone, Debug)]
struct Slot {
    key_start: u32,
    key_len: u32,
    state: SeriesState,
}

/// Series by canonical label text (see the module doc).
#[derive(Clone, Debug, Default)]
pub(crate) struct SeriesMap {
    /// Every live key's text (and, until compaction, removed ones').
    text: String,
    slots: Vec<Slot>,
    /// Indices into `slots`, hashed by key text.
    index: HashTable<u32>,
    hasher: HashState,
    /// Bytes of `text` no slot refers to.
    dead_text: usize,
    /// Changes whenever a removal moves slots (see [`SeriesMap::layout`]).
    layout: u64,
}

impl SeriesMap {
    pub(crate) fn new() -> Self {
        SeriesMap::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of key text the map holds now (live and not yet compacted): what a new key is
    /// added to, at most [`MAX_KEY_TEXT`].
    pub(crate) fn key_text_len(&self) -> usize {
        self.text.len() - self.dead_text
    }

    fn key_of<'a>(text: &'a str, slot: &Slot) -> &'a str {
        let start = slot.key_start as usize;
        &text[start..start + slot.key_len as usize]
    }

    /// Changes whenever a series is removed: a position from [`SeriesMap::position`] names
    /// the same series for as long as this stays the same (insertion appends, text
    /// compaction keeps positions).
    pub(crate) fn layout(&self) -> u64 {
        self.layout
    }

    /// The position of the series under `key`, valid while [`SeriesMap::layout`] stays.
    pub(crate) fn position(&self, key: &str) -> Option<u32> {
        self.find(key)
    }

    /// The series at a position from [`SeriesMap::position`].
    pub(crate) fn at(&self, position: u32) -> Option<&SeriesState> {
        self.slots.get(position as usize).map(|slot| &slot.state)
    }

    /// The series at a position from [`SeriesMap::position`], to change its values.
    pub(crate) fn at_mut(&mut self, position: u32) -> Option<&mut SeriesState> {
        self.slots
            .get_mut(position as usize)
            .map(|slot| &mut slot.state)
    }

    fn find(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let (text, slots) = (&self.text, &self.slots);
        self.index
            .find(hash, |&i| Self::key_of(text, &slots[i as usize]) == key)
            .copied()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&SeriesState> {
        self.find(key).map(|i| &self.slots[i as usize].state)
    }

    /// The series under `key`, made with `make` if there is none; true when it is new.
    /// `None` when a new key would take the key text past [`MAX_KEY_TEXT`] (the store refuses
    /// such an update before applying it, see [`SeriesMap::key_text_len`]).
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> SeriesState,
    ) -> Option<(&mut SeriesState, bool)> {
        match self.find(key) {
            Some(i) => Some((&mut self.slots[i as usize].state, false)),
            None if self.key_text_len() + key.len() > MAX_KEY_TEXT => None,
            None => {
                let i = self.push(key, make());
                Some((&mut self.slots[i as usize].state, true))
            }
        }
    }

    /// Adds a series unless `key` is already there (then returns `state` back).
    pub(crate) fn insert_new(&mut self, key: &str, state: SeriesState) -> Result<(), SeriesState> {
        if self.find(key).is_some() || self.key_text_len() + key.len() > MAX_KEY_TEXT {
            return Err(state);
        }
        self.push(key, state);
        Ok(())
    }

    /// Appends a slot for a key that is not in the map and fits (see [`MAX_KEY_TEXT`]).
    fn push(&mut self, key: &str, state: SeriesState) -> u32 {
        if self.text.len() + key.len() > MAX_KEY_TEXT {
            self.compact_text();
        }
        let key_start = self.text.len() as u32;
        self.text.push_str(key);
        let i = self.slots.len() as u32;
        self.slots.push(Slot {
            key_start,
            key_len: key.len() as u32,
            state,
        });
        let hash = self.hasher.hash_one(key);
        let (text, slots, hasher) = (&self.text, &self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(Self::key_of(text, &slots[j as usize]))
        });
        i
    }

    /// Keeps the series for which `keep` returns true, in their order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str, &mut SeriesState) -> bool) {
        // New position of each slot, or `u32::MAX` for a removed one.
        let mut moved_to: Vec<u32> = Vec::new();
        let mut next = 0u32;
        let len = self.slots.len();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if keep(Self::key_of(&self.text, slot), &mut slot.state) {
                if !moved_to.is_empty() {
                    moved_to.push(next);
                }
                next += 1;
            } else {
                if moved_to.is_empty() {
                    moved_to = (0..i as u32).collect();
                    moved_to.reserve(len - i);
                }
                moved_to.push(u32::MAX);
                self.dead_text += slot.key_len as usize;
            }
        }
        if moved_to.is_empty() {
            return;
        }
        self.layout += 1;
        let mut position = 0;
        self.slots.retain(|_| {
            position += 1;
            moved_to[position - 1] != u32::MAX
        });
        self.index.retain(|i| match moved_to[*i as usize] {
            u32::MAX => false,
            to => {
                *i = to;
                true
            }
        });
        if self.slots.is_empty() {
            self.text = String::new();
            self.dead_text = 0;
            self.index.shrink_to_fit(|_| 0);
        } else if self.dead_text > self.text.len() / 2 {
            self.compact_text();
        }
    }

    /// Rewrites the text with the live keys only (order kept, so the index stays valid).
    fn compact_text(&mut self) {
        if self.dead_text == 0 {
            return;
        }
        let mut text = String::with_capacity(self.text.len() - self.dead_text);
        for slot in &mut self.slots {
            let start = text.len() as u32;
            text.push_str(Self::key_of(&self.text, slot));
            slot.key_start = start;
        }
        self.text = text;
        self.dead_text = 0;
        let (text, slots, hasher) = (&self.text, &self.slots, &self.hasher);
        self.index
            .shrink_to_fit(|&j| hasher.hash_one(Self::key_of(text, &slots[j as usize])));
    }

    /// Every series (key, state) in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &SeriesState)> {
        self.slots
            .iter()
            .map(|slot| (Self::key_of(&self.text, slot), &slot.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ScalarEntries, SeriesData};
    use indexmap::IndexMap;
    use proptest::prelude::*;

    /// A state told apart by its `retired` value.
    fn state(n: f64) -> SeriesState {
        SeriesState {
            data: SeriesData::Scalar {
                mode: None,
                entries: ScalarEntries::new(),
                retired: n,
                retired_gauge: None,
            },
        }
    }

    fn tag(s: &SeriesState) -> f64 {
        match s.data {
            SeriesData::Scalar { retired, .. } => retired,
            SeriesData::Dist(_) => f64::NAN,
        }
    }

    fn contents(map: &SeriesMap) -> Vec<(String, f64)> {
        map.iter().map(|(k, s)| (k.to_string(), tag(s))).collect()
    }

    /// What a series costs besides its key text and a `u32` index slot: a scalar series with
    /// its one worker inline, with the key's range (`IndexMap<Box<str>, _>` paid 88 bytes
    /// here plus a heap block per key).
    #[test]
    fn a_series_slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<SeriesState>(), 56);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }

    #[test]
    fn keeps_insertion_order_through_removal_and_compaction() {
        let mut map = SeriesMap::new();
        for i in 0..100 {
            let key = format!("k=\"{i}\"");
            let (_, new) = map.get_or_insert_with(&key, || state(i as f64)).unwrap();
            assert!(new);
        }
        let (_, new) = map.get_or_insert_with("k=\"7\"", || state(-1.0)).unwrap();
        assert!(!new, "an existing key is found, not added again");
        // Remove three quarters: the text is compacted, lookups and order survive it.
        map.retain(|_, s| tag(s) as usize % 4 == 3);
        assert_eq!(map.dead_text, 0, "compacted once most of the text was dead");
        assert_eq!(map.len(), 25);
        let order: Vec<f64> = map.iter().map(|(_, s)| tag(s)).collect();
        assert_eq!(
            order,
            (0..25).map(|i| (i * 4 + 3) as f64).collect::<Vec<_>>()
        );
        for i in 0..100 {
            let found = map.get(&format!("k=\"{i}\"")).map(tag);
            assert_eq!(found, (i % 4 == 3).then_some(i as f64), "key {i}");
        }
        assert_eq!(
            map.key_text_len(),
            map.iter().map(|(k, _)| k.len()).sum::<usize>()
        );
        map.retain(|_, _| false);
        assert!(map.is_empty() && map.get("k=\"3\"").is_none());
        assert_eq!(map.key_text_len(), 0);
    }

    #[test]
    fn insert_new_refuses_a_key_already_there() {
        let mut map = SeriesMap::new();
        assert!(map.insert_new("a=\"1\"", state(1.0)).is_ok());
        let back = map.insert_new("a=\"1\"", state(2.0)).unwrap_err();
        assert_eq!(tag(&back), 2.0);
        assert_eq!(contents(&map), vec![("a=\"1\"".to_string(), 1.0)]);
        // The empty label set is a key like any other.
        assert!(map.insert_new("", state(3.0)).is_ok());
        assert_eq!(map.get("").map(tag), Some(3.0));
    }

    /// One step of the model test.
    #[derive(Clone, Debug)]
    enum Op {
        Insert(u8),
        /// Keep keys whose number is not a multiple of (n % 5 + 2).
        Retain(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => any::<u8>().prop_map(Op::Insert),
            1 => any::<u8>().prop_map(Op::Retain),
        ]
    }

    proptest! {
        /// Any sequence of inserts and removals gives what an `IndexMap` (the map this one
        /// replaced) gives: the same keys, values and order.
        #[test]
        fn behaves_like_an_indexmap(ops in prop::collection::vec(op(), 0..300)) {
            let mut map = SeriesMap::new();
            let mut model: IndexMap<String, f64> = IndexMap::new();
            // Positions looked up earlier, with the layout they were found under.
            let mut found: Vec<(String, u32, u64)> = Vec::new();
            for (step, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(n) => {
                        // Keys of different lengths, some with escapes.
                        let key = format!("n=\"{n}\",x=\"{}\"", "\\\"".repeat(n as usize % 3));
                        let (_, new) = map.get_or_insert_with(&key, || state(step as f64)).unwrap();
                        prop_assert_eq!(new, !model.contains_key(&key));
                        model.entry(key.clone()).or_insert(step as f64);
                        let position = map.position(&key).unwrap();
                        found.push((key, position, map.layout()));
                    }
                    Op::Retain(m) => {
                        let div = m % 5 + 2;
                        let keep = |k: &str| {
                            let n: u8 = k[3..].split('"').next().unwrap().parse().unwrap();
                            !n.is_multiple_of(div)
                        };
                        map.retain(|k, _| keep(k));
                        model.retain(|k, _| keep(k));
                    }
                }
                let expected: Vec<(String, f64)> =
                    model.iter().map(|(k, v)| (k.clone(), *v)).collect();
                prop_assert_eq!(contents(&map), expected);
                for (k, v) in &model {
                    prop_assert_eq!(map.get(k).map(tag), Some(*v));
                }
                prop_assert!(map.get("n=\"256\"").is_none());
                // A position names the same series for as long as the layout stays.
                for (key, position, layout) in &found {
                    if *layout == map.layout() {
                        prop_assert_eq!(map.at(*position).map(tag), model.get(key).copied());
                    }
                }
                found.retain(|(_, _, layout)| *layout == map.layout());
            }
        }
    }
}
