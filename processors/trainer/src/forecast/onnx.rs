//! A [`ForecastModel`] as an ONNX model: one `ai.onnx.ml`
//! `TreeEnsembleRegressor` (opset 3) reading `X` (double, `[N, columns]`)
//! and writing `Y` (float, `[N, 1]`). Thresholds, leaf values and the base
//! score go in the `*_as_tensor` double attributes, so a runtime splits
//! exactly where autotrain does; only the output is float (the operator's
//! type), which keeps predictions within 1e-6 of autotrain's at the
//! magnitudes forecast here.
//!
//! The messages are the subset of `onnx.proto` this needs, with its field
//! numbers, encoded by `prost`.

use prost::Message;

use super::model::{ForecastModel, Node};

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "7")]
    pub domain: String,
}

/// `AttributeProto.AttributeType`.
const INT: i32 = 2;
const STRING: i32 = 3;
const TENSOR: i32 = 4;
const INTS: i32 = 7;
const STRINGS: i32 = 8;
/// `TensorProto.DataType`.
const FLOAT: i32 = 1;
const DOUBLE: i32 = 11;

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

fn ints(name: &str, v: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: v,
        r#type: INTS,
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: v,
        r#type: INT,
        ..Default::default()
    }
}

fn string(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: v.as_bytes().to_vec(),
        r#type: STRING,
        ..Default::default()
    }
}

fn strings(name: &str, v: Vec<&str>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        strings: v.into_iter().map(|s| s.as_bytes().to_vec()).collect(),
        r#type: STRINGS,
        ..Default::default()
    }
}

fn doubles(name: &str, v: Vec<f64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(TensorProto {
            dims: vec![v.len() as i64],
            data_type: DOUBLE,
            name: name.into(),
            double_data: v,
        }),
        r#type: TENSOR,
        ..Default::default()
    }
}

fn tensor_value(name: &str, elem_type: i32, columns: Option<i64>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension {
                            dim_value: None,
                            dim_param: Some("N".into()),
                        },
                        Dimension {
                            dim_value: columns,
                            dim_param: None,
                        },
                    ],
                }),
            }),
        }),
    }
}

/// The ONNX model of `model`, serialised.
pub fn export(model: &ForecastModel, producer_version: &str) -> Vec<u8> {
    let (mut tree_ids, mut node_ids, mut features, mut modes) = (vec![], vec![], vec![], vec![]);
    let (mut values, mut trues, mut falses, mut missing) = (vec![], vec![], vec![], vec![]);
    let (mut t_tree, mut t_node, mut t_ids, mut t_weights) = (vec![], vec![], vec![], vec![]);
    for (t, tree) in model.trees.iter().enumerate() {
        for (n, node) in tree.nodes.iter().enumerate() {
            tree_ids.push(t as i64);
            node_ids.push(n as i64);
            match node {
                Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    missing_left,
                } => {
                    features.push(*feature as i64);
                    modes.push("BRANCH_LT");
                    values.push(*threshold);
                    trues.push(*left as i64);
                    falses.push(*right as i64);
                    missing.push(i64::from(*missing_left));
                }
                Node::Leaf { value } => {
                    features.push(0);
                    modes.push("LEAF");
                    values.push(0.0);
                    trues.push(0);
                    falses.push(0);
                    missing.push(0);
                    t_tree.push(t as i64);
                    t_node.push(n as i64);
                    t_ids.push(0);
                    t_weights.push(*value);
                }
            }
        }
    }
    let node = NodeProto {
        input: vec!["X".into()],
        output: vec!["Y".into()],
        name: "forecast".into(),
        op_type: "TreeEnsembleRegressor".into(),
        domain: "ai.onnx.ml".into(),
        attribute: vec![
            int("n_targets", 1),
            string("aggregate_function", "SUM"),
            string("post_transform", "NONE"),
            doubles("base_values_as_tensor", vec![model.base_score]),
            ints("nodes_treeids", tree_ids),
            ints("nodes_nodeids", node_ids),
            ints("nodes_featureids", features),
            strings("nodes_modes", modes),
            doubles("nodes_values_as_tensor", values),
            ints("nodes_truenodeids", trues),
            ints("nodes_falsenodeids", falses),
            ints("nodes_missing_value_tracks_true", missing),
            ints("target_treeids", t_tree),
            ints("target_nodeids", t_node),
            ints("target_ids", t_ids),
            doubles("target_weights_as_tensor", t_weights),
        ],
    };
    let d = model.columns.len() as i64;
    ModelProto {
        ir_version: 8,
        producer_name: "autotrain".into(),
        producer_version: producer_version.into(),
        doc_string: format!(
            "autotrain forecast of {} from {} ({} trees)",
            model.target.name(),
            model.columns.join(", "),
            model.trees.len()
        ),
        graph: Some(GraphProto {
            node: vec![node],
            name: "autotrain_forecast".into(),
            input: vec![tensor_value("X", DOUBLE, Some(d))],
            output: vec![tensor_value("Y", FLOAT, Some(1))],
        }),
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "ai.onnx.ml".into(),
                version: 3,
            },
        ],
        metadata_props: vec![
            StringStringEntryProto {
                key: "columns".into(),
                value: model.columns.join(","),
            },
            StringStringEntryProto {
                key: "target".into(),
                value: model.target.name(),
            },
            StringStringEntryProto {
                key: "parameter_hash".into(),
                value: model.param_hash(),
            },
        ],
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::model::Tree;
    use crate::forecast::target::Target;

    #[test]
    fn one_tree_ensemble_node_with_every_node_and_leaf() {
        let model = ForecastModel {
            columns: vec!["a".into(), "b".into()],
            target: Target::AbsReturn { horizon: 1 },
            base_score: 0.5,
            trees: vec![Tree {
                nodes: vec![
                    Node::Split {
                        feature: 1,
                        threshold: 0.25,
                        left: 1,
                        right: 2,
                        missing_left: true,
                    },
                    Node::Leaf { value: -1.0 },
                    Node::Leaf { value: 1.0 },
                ],
            }],
        };
        let bytes = export(&model, "test");
        let back = ModelProto::decode(bytes.as_slice()).expect("decode");
        let graph = back.graph.expect("graph");
        let node = &graph.node[0];
        assert_eq!(node.op_type, "TreeEnsembleRegressor");
        let attr = |n: &str| node.attribute.iter().find(|a| a.name == n).expect(n);
        assert_eq!(attr("nodes_truenodeids").ints, vec![1, 0, 0]);
        assert_eq!(attr("target_nodeids").ints, vec![1, 2]);
        assert_eq!(
            attr("target_weights_as_tensor")
                .t
                .as_ref()
                .map(|t| t.double_data.clone()),
            Some(vec![-1.0, 1.0])
        );
        assert_eq!(attr("nodes_modes").strings[0], b"BRANCH_LT");
    }
}
