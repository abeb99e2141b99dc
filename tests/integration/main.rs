//! End-to-end suite: the real application on 127.0.0.1:0, driven over real sockets.

mod auth;
mod candles;
mod contract;
mod controls;
mod hostile;
mod limits;
mod market_binance;
mod metrics;
mod nothing_lost;
mod openapi;
mod orders;
mod performance;
mod probes;
mod rest_market;
mod rest_trading;
mod restart;
mod ws_end_to_end;
