//! nf_tables expressions, each encoded as the kernel expects it. The comment
//! on each variant is the `nft --debug=netlink` line it equals.

use crate::netlink::MsgWriter;

use super::sys::*;

/// Data loaded by `immediate` or stored in a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Value(Vec<u8>),
    /// A verdict code and, for jump/goto, the chain.
    Verdict(i32, Option<std::sync::Arc<str>>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `[ meta load KEY => reg DREG ]`
    MetaLoad { key: u32, dreg: u32 },
    /// `[ meta set KEY with reg SREG ]`
    MetaSet { key: u32, sreg: u32 },
    /// `[ cmp OP reg SREG DATA ]`
    Cmp { op: u32, sreg: u32, data: Vec<u8> },
    /// `[ payload load LENb @ BASE header + OFFSET => reg DREG ]`
    Payload { base: u32, offset: u32, len: u32, dreg: u32 },
    /// `[ lookup reg SREG set SET [dreg DREG] [0x1 (inverted)] ]`
    Lookup { set: String, set_id: Option<u32>, sreg: u32, dreg: Option<u32>, invert: bool },
    /// `[ immediate reg DREG DATA ]`
    Immediate { dreg: u32, data: Data },
    /// `[ ct load KEY => reg DREG ]`
    Ct { key: u32, dreg: u32 },
    /// `[ bitwise reg DREG = ( reg SREG & MASK ) ^ XOR ]`
    Bitwise { sreg: u32, dreg: u32, mask: Vec<u8>, xor: Vec<u8> },
    /// `[ socket load cgroupv2 => reg DREG , level LEVEL ]`
    SocketCgroup { level: u32, dreg: u32 },
    /// `[ tproxy FAMILY port reg REG ]`
    Tproxy { family: u8, reg_port: u32 },
    /// `[ reject type TYPE code CODE ]`
    Reject { ty: u32, code: u8 },
    /// `[ nat dnat FAMILY addr_min reg ADDR proto_min reg PROTO ]`
    Dnat { family: u8, reg_addr: u32, reg_proto: u32 },
    /// `[ ct set KEY with reg SREG ]`
    CtSet { key: u32, sreg: u32 },
    /// `[ fib FLAGS RESULT => reg DREG ]`
    Fib { flags: u32, result: u32, dreg: u32 },
    /// `[ redir proto_min reg REG ]`
    Redir { reg_proto: u32 },
    /// `[ counter pkts 0 bytes 0 ]`
    Counter,
}

pub fn encode_data(w: &mut MsgWriter, ty: u16, data: &Data) {
    let n = w.nest(ty);
    match data {
        Data::Value(bytes) => w.attr(NFTA_DATA_VALUE, bytes),
        Data::Verdict(code, chain) => {
            let v = w.nest(NFTA_DATA_VERDICT);
            w.u32be(NFTA_VERDICT_CODE, *code as u32);
            if let Some(chain) = chain {
                w.str(NFTA_VERDICT_CHAIN, chain);
            }
            w.nest_end(v);
        }
    }
    w.nest_end(n);
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::MetaLoad { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } => "immediate",
            Expr::Ct { .. } => "ct",
            Expr::Bitwise { .. } => "bitwise",
            Expr::SocketCgroup { .. } => "socket",
            Expr::Tproxy { .. } => "tproxy",
            Expr::Dnat { .. } => "nat",
            Expr::Reject { .. } => "reject",
            Expr::CtSet { .. } => "ct",
            Expr::Fib { .. } => "fib",
            Expr::Redir { .. } => "redir",
            Expr::Counter => "counter",
        }
    }

    /// Append this expression as one NFTA_LIST_ELEM of a rule.
    pub fn encode(&self, w: &mut MsgWriter) {
        let elem = w.nest(NFTA_LIST_ELEM);
        w.str(NFTA_EXPR_NAME, self.name());
        let d = w.nest(NFTA_EXPR_DATA);
        match self {
            Expr::MetaLoad { key, dreg } => {
                w.u32be(NFTA_META_KEY, *key);
                w.u32be(NFTA_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                w.u32be(NFTA_META_KEY, *key);
                w.u32be(NFTA_META_SREG, *sreg);
            }
            Expr::Cmp { op, sreg, data } => {
                w.u32be(NFTA_CMP_SREG, *sreg);
                w.u32be(NFTA_CMP_OP, *op);
                encode_data(w, NFTA_CMP_DATA, &Data::Value(data.clone()));
            }
            Expr::Payload { base, offset, len, dreg } => {
                w.u32be(NFTA_PAYLOAD_DREG, *dreg);
                w.u32be(NFTA_PAYLOAD_BASE, *base);
                w.u32be(NFTA_PAYLOAD_OFFSET, *offset);
                w.u32be(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Lookup { set, set_id, sreg, dreg, invert } => {
                w.str(NFTA_LOOKUP_SET, set);
                if let Some(id) = set_id {
                    w.u32be(NFTA_LOOKUP_SET_ID, *id);
                }
                w.u32be(NFTA_LOOKUP_SREG, *sreg);
                if let Some(dreg) = dreg {
                    w.u32be(NFTA_LOOKUP_DREG, *dreg);
                }
                if *invert {
                    w.u32be(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate { dreg, data } => {
                w.u32be(NFTA_IMMEDIATE_DREG, *dreg);
                encode_data(w, NFTA_IMMEDIATE_DATA, data);
            }
            Expr::Ct { key, dreg } => {
                w.u32be(NFTA_CT_DREG, *dreg);
                w.u32be(NFTA_CT_KEY, *key);
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                w.u32be(NFTA_BITWISE_SREG, *sreg);
                w.u32be(NFTA_BITWISE_DREG, *dreg);
                w.u32be(NFTA_BITWISE_LEN, mask.len() as u32);
                encode_data(w, NFTA_BITWISE_MASK, &Data::Value(mask.clone()));
                encode_data(w, NFTA_BITWISE_XOR, &Data::Value(xor.clone()));
            }
            Expr::SocketCgroup { level, dreg } => {
                w.u32be(NFTA_SOCKET_KEY, NFT_SOCKET_CGROUPV2);
                w.u32be(NFTA_SOCKET_DREG, *dreg);
                w.u32be(NFTA_SOCKET_LEVEL, *level);
            }
            Expr::Tproxy { family, reg_port } => {
                w.u32be(NFTA_TPROXY_FAMILY, u32::from(*family));
                w.u32be(NFTA_TPROXY_REG_PORT, *reg_port);
            }
            Expr::Reject { ty, code } => {
                w.u32be(NFTA_REJECT_TYPE, *ty);
                w.attr(NFTA_REJECT_ICMP_CODE, &[*code]);
            }
            Expr::Dnat { family, reg_addr, reg_proto } => {
                w.u32be(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                w.u32be(NFTA_NAT_FAMILY, u32::from(*family));
                w.u32be(NFTA_NAT_REG_ADDR_MIN, *reg_addr);
                w.u32be(NFTA_NAT_REG_PROTO_MIN, *reg_proto);
            }
            Expr::CtSet { key, sreg } => {
                w.u32be(NFTA_CT_KEY, *key);
                w.u32be(NFTA_CT_SREG, *sreg);
            }
            Expr::Fib { flags, result, dreg } => {
                w.u32be(NFTA_FIB_DREG, *dreg);
                w.u32be(NFTA_FIB_RESULT, *result);
                w.u32be(NFTA_FIB_FLAGS, *flags);
            }
            Expr::Redir { reg_proto } => w.u32be(NFTA_REDIR_REG_PROTO_MIN, *reg_proto),
            Expr::Counter => {
                w.u64be(NFTA_COUNTER_BYTES, 0);
                w.u64be(NFTA_COUNTER_PACKETS, 0);
            }
        }
        w.nest_end(d);
        w.nest_end(elem);
    }
}

/// `[ immediate reg 0 VERDICT ]`: the rule's verdict.
pub fn verdict(code: i32, chain: Option<&str>) -> Expr {
    Expr::Immediate { dreg: NFT_REG_VERDICT, data: Data::Verdict(code, chain.map(std::sync::Arc::from)) }
}

/// `meta KEY == VALUE` as load + compare.
pub fn meta_eq(key: u32, value: &[u8]) -> [Expr; 2] {
    [Expr::MetaLoad { key, dreg: NFT_REG_1 }, Expr::Cmp { op: NFT_CMP_EQ, sreg: NFT_REG_1, data: value.to_vec() }]
}
