//! Reading the tensor list of a JSON header in one pass.
//!
//! A tensor's `data` can only be typed once its `datatype` and `shape` are
//! known. Clients usually write those first (Switchyard's own encoder
//! does), so when `data` arrives the elements are read straight into typed
//! storage while the header is parsed. Only when `data` comes first, or the element limit
//! would be passed, is it kept as raw JSON text and read afterwards: a
//! second scan over what is most of the body, which the common case skips.
//!
//! Whatever the order, the errors are the same: a bad element, a wrong
//! count or a wrong type is recorded while reading and reported by
//! [`crate::wire::decode_tensors`] in its usual order, after every shape
//! and the element limit were checked, and data is read ahead only while
//! the shapes declared so far stay within that limit.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::tensor::{Element, JsonScalar, for_datatype};
use crate::{DataType, ProtocolError, TensorData};

/// Room given up front to data read ahead, in elements: a client may
/// declare more than it sends, so beyond this the vector grows with what
/// actually arrives.
pub(crate) const INITIAL_CAPACITY: u64 = 1 << 16;

/// A tensor as it appears in the JSON header, its data read or not yet.
#[derive(Debug)]
pub(crate) struct WireTensor<'a> {
    pub name: String,
    /// Read as JSON numbers so that a negative or fractional dimension gets
    /// an error naming the tensor, not a bare serde message.
    pub shape: Vec<Number>,
    pub datatype: String,
    pub parameters: Option<Map<String, Value>>,
    pub data: Option<WireData<'a>>,
}

/// A tensor's inline `data`.
#[derive(Debug)]
pub(crate) enum WireData<'a> {
    /// Not read yet: it came before the datatype or shape, or reading it
    /// would have passed the element limit.
    Raw(&'a RawValue),
    /// Read while the header was parsed.
    Read(JsonData),
}

/// Elements read from a JSON array, before they are checked against the
/// tensor's shape.
#[derive(Debug)]
pub(crate) struct JsonData {
    data: TensorData,
    /// Elements the JSON held (more than were kept if it held too many).
    seen: u64,
    problem: Option<Problem>,
}

/// The first thing in a tensor's data that could not be read.
#[derive(Debug)]
enum Problem {
    /// Element `index` does not fit the datatype.
    Element { index: usize, reason: String },
    /// A value that is not a number, a boolean or an array.
    Type(String),
}

impl JsonData {
    /// The data, if it is what `tensor` declared.
    pub(crate) fn finish(
        self,
        tensor: &str,
        shape: &[u64],
        datatype: DataType,
        expected: u64,
    ) -> Result<TensorData, ProtocolError> {
        match self.problem {
            Some(Problem::Element { index, reason }) => Err(ProtocolError::BadElement {
                tensor: tensor.to_owned(),
                index,
                datatype,
                reason,
            }),
            Some(Problem::Type(message)) => {
                Err(ProtocolError::Json(format!("tensor {tensor:?}: {message}")))
            }
            None if self.seen != expected => Err(ProtocolError::ElementCount {
                tensor: tensor.to_owned(),
                shape: shape.to_vec(),
                expected,
                actual: self.seen,
            }),
            None => Ok(self.data),
        }
    }
}

/// Reads data kept as raw text, now that its tensor's datatype and shape
/// are known.
pub(crate) fn read_raw(
    tensor: &str,
    shape: &[u64],
    datatype: DataType,
    expected: u64,
    json: &RawValue,
) -> Result<TensorData, ProtocolError> {
    // Every element takes at least one byte of JSON, so the text length
    // bounds the allocation whatever shape the client declared.
    let capacity = expected.min(json.get().len() as u64);
    let mut deserializer = serde_json::Deserializer::from_str(json.get());
    match read_data(datatype, expected, capacity, &mut deserializer) {
        Ok(Some(read)) => read.finish(tensor, shape, datatype, expected),
        Ok(None) => Err(ProtocolError::UnsupportedDatatype(datatype)),
        Err(error) => Err(ProtocolError::Json(format!("tensor {tensor:?}: {error}"))),
    }
}

/// Reads a number, a boolean or nested arrays of them as `datatype`,
/// keeping at most `expected` elements. `None` for a datatype without typed
/// storage, in which case nothing was read.
fn read_data<'de, D: Deserializer<'de>>(
    datatype: DataType,
    expected: u64,
    capacity: u64,
    deserializer: D,
) -> Result<Option<JsonData>, D::Error> {
    let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
    for_datatype!(
        datatype,
        T => read_as::<T, D>(deserializer, expected, capacity).map(Some),
        _ => Ok(None)
    )
}

fn read_as<'de, T: Element, D: Deserializer<'de>>(
    deserializer: D,
    expected: u64,
    capacity: usize,
) -> Result<JsonData, D::Error> {
    let mut sink = Sink::<T>::new(expected, capacity);
    deserializer.deserialize_any(Flatten(&mut sink))?;
    Ok(sink.finish())
}

/// What tensor data must be.
const ELEMENTS: &str = "a number, a boolean, or a (nested) array of them";

/// Where [`Flatten`] (and the scanner in [`crate::json_scan`]) put the
/// elements.
pub(crate) struct Sink<T> {
    out: Vec<T>,
    seen: u64,
    /// Elements kept at most (the declared count).
    limit: u64,
    problem: Option<Problem>,
}

impl<T: Element> Sink<T> {
    /// Keeps at most `limit` elements, with room for `capacity` up front.
    pub(crate) fn new(limit: u64, capacity: usize) -> Self {
        Self {
            out: Vec::with_capacity(capacity),
            seen: 0,
            limit,
            problem: None,
        }
    }

    pub(crate) fn finish(self) -> JsonData {
        JsonData {
            data: T::into_data(self.out),
            seen: self.seen,
            problem: self.problem,
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, value: JsonScalar) {
        let index = self.seen;
        self.seen += 1;
        if self.problem.is_some() || index >= self.limit {
            return;
        }
        match T::from_json(value) {
            Ok(element) => self.out.push(element),
            Err(reason) => {
                self.problem = Some(Problem::Element {
                    index: usize::try_from(index).unwrap_or(usize::MAX),
                    reason,
                });
            }
        }
    }

    fn wrong_type(&mut self, unexpected: Unexpected<'_>) {
        if self.problem.is_none() {
            let error = <serde_json::Error as de::Error>::invalid_type(unexpected, &ELEMENTS);
            self.problem = Some(Problem::Type(error.to_string()));
        }
    }
}

/// Reads a number, a boolean or arbitrarily nested arrays of them into one
/// flat row-major vector, without building a `serde_json::Value` tree. A
/// value that does not fit is recorded and the rest skipped, so the JSON
/// around it is still read to its end.
struct Flatten<'s, T>(&'s mut Sink<T>);

impl<'de, T: Element> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Element> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(ELEMENTS)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(JsonScalar::Bool(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(JsonScalar::Unsigned(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(JsonScalar::Signed(v));
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(JsonScalar::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.wrong_type(Unexpected::Str(v));
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.wrong_type(Unexpected::Unit);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.wrong_type(Unexpected::Map);
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// Reads a list of tensors; data is read ahead while the elements the
/// tensors declare, together, stay within `max_elements`.
pub(crate) struct TensorsSeed<'a> {
    max_elements: u64,
    borrow: PhantomData<&'a ()>,
}

impl<'a> TensorsSeed<'a> {
    pub(crate) fn new(max_elements: u64) -> Self {
        Self {
            max_elements,
            borrow: PhantomData,
        }
    }
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for TensorsSeed<'a> {
    type Value = Vec<WireTensor<'a>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for TensorsSeed<'a> {
    type Value = Vec<WireTensor<'a>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of tensors")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut tensors = Vec::new();
        let mut declared: u64 = 0;
        while let Some(tensor) = seq.next_element_seed(TensorSeed {
            budget: self.max_elements.saturating_sub(declared),
            borrow: PhantomData,
        })? {
            let count = declared_count(&tensor.shape).unwrap_or(0);
            declared = declared.saturating_add(count);
            tensors.push(tensor);
        }
        Ok(tensors)
    }
}

/// A shape's element count, if every dimension is a size and their
/// product fits (otherwise `decode_tensors` names what is wrong).
pub(crate) fn declared_count(shape: &[Number]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, dim| acc.checked_mul(dim.as_u64()?))
}

/// Reads one tensor; its data is read ahead if it declares at most
/// `budget` elements.
struct TensorSeed<'a> {
    budget: u64,
    borrow: PhantomData<&'a ()>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum TensorField {
    Name,
    Shape,
    Datatype,
    Parameters,
    Data,
    #[serde(other)]
    Other,
}

/// Fills a field once; a second occurrence is an error, as serde's own
/// structs have it.
pub(crate) fn set_once<T, E: de::Error>(
    slot: &mut Option<T>,
    field: &'static str,
    value: T,
) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for TensorSeed<'a> {
    type Value = WireTensor<'a>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for TensorSeed<'a> {
    type Value = WireTensor<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tensor (name, shape, datatype, data or parameters)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut name = None;
        let mut shape: Option<Vec<Number>> = None;
        let mut datatype: Option<String> = None;
        let mut parameters = None;
        let mut data = None;
        while let Some(field) = map.next_key::<TensorField>()? {
            match field {
                TensorField::Name => set_once(&mut name, "name", map.next_value::<String>()?)?,
                TensorField::Shape => set_once(&mut shape, "shape", map.next_value()?)?,
                TensorField::Datatype => set_once(&mut datatype, "datatype", map.next_value()?)?,
                TensorField::Parameters => set_once(
                    &mut parameters,
                    "parameters",
                    map.next_value::<Option<Map<String, Value>>>()?,
                )?,
                TensorField::Data => {
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("data"));
                    }
                    let ahead = read_ahead(datatype.as_deref(), shape.as_deref(), self.budget);
                    let value = match ahead {
                        Some((datatype, expected)) => map
                            .next_value_seed(ReadAhead { datatype, expected })?
                            .map(WireData::Read),
                        None => map.next_value::<Option<&'a RawValue>>()?.map(WireData::Raw),
                    };
                    data = Some(value);
                }
                TensorField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(WireTensor {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters: parameters.flatten(),
            data: data.flatten(),
        })
    }
}

/// The datatype and element count to read data ahead with, if its tensor's
/// datatype and shape are known, valid and within `budget`.
pub(crate) fn read_ahead(
    datatype: Option<&str>,
    shape: Option<&[Number]>,
    budget: u64,
) -> Option<(DataType, u64)> {
    let datatype: DataType = datatype?.parse().ok()?;
    let count = declared_count(shape?)?;
    let typed = for_datatype!(datatype, T => <T as Element>::DATATYPE == datatype, _ => false);
    (typed && count <= budget).then_some((datatype, count))
}

/// Reads a tensor's `data` ahead (`null` is no data).
struct ReadAhead {
    datatype: DataType,
    expected: u64,
}

impl<'de> DeserializeSeed<'de> for ReadAhead {
    type Value = Option<JsonData>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ReadAhead {
    type Value = Option<JsonData>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let capacity = self.expected.min(INITIAL_CAPACITY);
        read_data(self.datatype, self.expected, capacity, deserializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(json: &str, max_elements: u64) -> Vec<WireTensor<'_>> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        match TensorsSeed::new(max_elements).deserialize(&mut deserializer) {
            Ok(tensors) => tensors,
            Err(error) => panic!("{json}: {error}"),
        }
    }

    fn read_ahead_flags(tensors: &[WireTensor<'_>]) -> Vec<bool> {
        tensors
            .iter()
            .map(|tensor| matches!(tensor.data, Some(WireData::Read(_))))
            .collect()
    }

    #[test]
    fn data_after_datatype_and_shape_is_read_ahead_within_the_limit() {
        let json = r#"[
            {"name":"a","shape":[2],"datatype":"FP32","data":[1,2]},
            {"data":[1,2],"name":"b","shape":[2],"datatype":"FP32"},
            {"name":"c","datatype":"FP16","shape":[2],"data":[1,2]},
            {"name":"d","shape":[3],"datatype":"INT64","data":[1,2,3]},
            {"name":"e","shape":[1],"datatype":"INT64","data":[1]}
        ]"#;
        // b (data first) and c (FP16) are always left for later. The five
        // declare 2 + 2 + 2 + 3 + 1 elements: with a limit of 9, e (the
        // 10th) is left for later too.
        assert_eq!(
            read_ahead_flags(&tensors(json, 9)),
            [true, false, false, true, false]
        );
        assert_eq!(
            read_ahead_flags(&tensors(json, 10)),
            [true, false, false, true, true]
        );
        // With a limit of 4, d would be the 7th to 9th.
        assert_eq!(
            read_ahead_flags(&tensors(json, 4)),
            [true, false, false, false, false]
        );
    }

    #[test]
    fn extra_elements_are_counted_but_not_kept() {
        let json = r#"[{"name":"a","shape":[2],"datatype":"INT32","data":[[1,2],[3,4,5]]}]"#;
        let mut list = tensors(json, u64::MAX);
        let Some(WireData::Read(read)) = list.pop().and_then(|t| t.data) else {
            panic!("not read ahead");
        };
        assert_eq!(read.seen, 5);
        assert_eq!(read.data, TensorData::Int32(vec![1, 2]));
    }
}
