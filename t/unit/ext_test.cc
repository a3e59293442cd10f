// Unit tests of the permessage-deflate negotiation (RFC 7692) of
// Sec-WebSocket-Extensions header values (ngx_http_rooms_ext.c).

#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "ngx_http_rooms_ext.h"

namespace {

// -1: no acceptable offer; else the server_max_window_bits accepted
// (0: none asked)
int negotiate(const std::string& value) {
    ngx_rooms_ws_deflate_offer_t offer{99};
    int rc = ngx_rooms_ws_deflate_negotiate(
        reinterpret_cast<const uint8_t*>(value.data()), value.size(), &offer);
    if (rc == 0) {
        EXPECT_EQ(offer.server_max_window_bits, 99u) << "offer touched";
        return -1;
    }
    EXPECT_EQ(rc, 1);
    return static_cast<int>(offer.server_max_window_bits);
}

std::string response(unsigned bits) {
    uint8_t buf[NGX_ROOMS_WS_DEFLATE_RESPONSE_MAX];
    ngx_rooms_ws_deflate_offer_t offer{bits};
    size_t n = ngx_rooms_ws_deflate_response(buf, &offer);
    EXPECT_LE(n, sizeof(buf));
    return std::string(reinterpret_cast<char*>(buf), n);
}

}  // namespace

TEST(Ext, WhatPeersOffer) {
    // browsers, Python websockets, Node ws
    EXPECT_EQ(negotiate("permessage-deflate; client_max_window_bits"), 0);
    EXPECT_EQ(negotiate("permessage-deflate"), 0);
    EXPECT_EQ(negotiate("permessage-deflate; client_max_window_bits=15"), 0);
    EXPECT_EQ(negotiate("permessage-deflate; server_no_context_takeover; "
                        "client_no_context_takeover"),
              0);
    EXPECT_EQ(negotiate("permessage-deflate; server_max_window_bits=10"), 10);
    EXPECT_EQ(negotiate("permessage-deflate;server_max_window_bits=8"), 8);
}

TEST(Ext, NoOffer) {
    EXPECT_EQ(negotiate(""), -1);
    EXPECT_EQ(negotiate("   "), -1);
    EXPECT_EQ(negotiate("x-webkit-deflate-frame"), -1);
    EXPECT_EQ(negotiate("permessage-deflate-x"), -1);
    EXPECT_EQ(negotiate("foo; permessage-deflate"), -1);  // a parameter
}

TEST(Ext, SyntaxAroundTheOffer) {
    EXPECT_EQ(negotiate("PerMessage-Deflate"), 0);
    EXPECT_EQ(negotiate("\t permessage-deflate \t; \t"
                        "server_max_window_bits \t= \t12\t"),
              12);
    EXPECT_EQ(negotiate(", ,permessage-deflate,"), 0);
    EXPECT_EQ(negotiate("foo, bar; baz=1; qux=\"a,b;c\", "
                        "permessage-deflate; server_max_window_bits=9"),
              9);
}

TEST(Ext, QuotedValues) {
    EXPECT_EQ(negotiate("permessage-deflate; server_max_window_bits=\"11\""),
              11);
    EXPECT_EQ(negotiate("permessage-deflate; client_max_window_bits=\"9\""),
              0);
    EXPECT_EQ(
        negotiate("permessage-deflate; server_max_window_bits=\"1\\3\""), 13);
    // a quoted comma does not end the offer
    EXPECT_EQ(negotiate("permessage-deflate; x=\"a, permessage-deflate\", "
                        "permessage-deflate; server_max_window_bits=14"),
              14);
}

TEST(Ext, OffersWeCannotHonourAreSkipped) {
    const char* skipped[] = {
        "permessage-deflate; server_max_window_bits",       // value needed
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=015",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=100000000000",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"\"",
        "permessage-deflate; unknown_parameter",
        "permessage-deflate; server_max_window_bits=10; "
        "server_max_window_bits=10",
        "permessage-deflate; client_no_context_takeover; "
        "client_no_context_takeover",
    };
    for (const char* offer : skipped) {
        SCOPED_TRACE(offer);
        EXPECT_EQ(negotiate(offer), -1);
        // the next offer is taken
        EXPECT_EQ(negotiate(std::string(offer) + ", permessage-deflate; "
                                                 "server_max_window_bits=12"),
                  12);
    }
}

TEST(Ext, TheFirstAcceptableOfferWins) {
    EXPECT_EQ(negotiate("permessage-deflate; server_max_window_bits=10, "
                        "permessage-deflate"),
              10);
    EXPECT_EQ(negotiate("permessage-deflate, "
                        "permessage-deflate; server_max_window_bits=10"),
              0);
}

TEST(Ext, BrokenSyntaxEndsTheValue) {
    // what follows a syntax error is not looked at
    const char* broken[] = {
        "permessage-deflate; server_max_window_bits=\"10",  // no end quote
        "permessage-deflate; =10",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate server_max_window_bits",
        "permessage-deflate; a=\"\\",
        "permessage-deflate; a=\"\x01\"",
        "; permessage-deflate",
        "\"permessage-deflate\"",
    };
    for (const char* value : broken) {
        SCOPED_TRACE(value);
        EXPECT_EQ(negotiate(value), -1);
    }
    // but an offer complete before the error stands
    EXPECT_EQ(negotiate("permessage-deflate, ; x"), 0);
}

TEST(Ext, Response) {
    EXPECT_EQ(response(0),
              "permessage-deflate; server_no_context_takeover; "
              "client_no_context_takeover");
    EXPECT_EQ(response(8),
              "permessage-deflate; server_no_context_takeover; "
              "client_no_context_takeover; server_max_window_bits=8");
    EXPECT_EQ(response(15),
              "permessage-deflate; server_no_context_takeover; "
              "client_no_context_takeover; server_max_window_bits=15");
}
