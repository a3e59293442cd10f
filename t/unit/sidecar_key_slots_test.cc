// Every script and every multi-key command the sidecar sends touches
// keys of one hash slot (docs/redis.md "Redis Cluster"): for each script,
// the keys the sidecar passes (keys.h builds every list) hash to one
// slot, the room channel a room script publishes on too, and no script
// builds a key name of its own.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cluster_map.h"
#include "keys.h"
#include "redis_scripts.h"

using namespace rooms;

namespace {

const std::vector<std::string> prefixes = {"", "p:", "rooms:", "a-b.c/"};
const std::vector<std::string> codes = {"A", "ABCD", "X_Y-9", "B0",
                                        std::string(32, 'Z')};
const std::vector<std::string> servers = {"web-1", "b3", "host.example-1f2e"};

// The keys of one call of a script, as app_*.cpp builds them.
enum class owner { room, server, index, senders };

struct script_keys {
    const lua_script* script;
    owner keys;
};

const std::vector<script_keys>& script_table() {
    static const std::vector<script_keys> table = {
        {&script_publish(), owner::room},
        {&script_sync(), owner::room},
        {&script_leave(), owner::room},
        {&script_state(), owner::room},
        {&script_touch(), owner::room},
        {&script_reap_room(), owner::room},
        {&script_heartbeat(), owner::server},
        {&script_reap_claim(), owner::server},
        {&script_reap_done(), owner::server},
        {&script_index(), owner::index},
        {&script_settle(), owner::senders},
    };
    return table;
}

std::vector<std::string> keys_of(owner o, const std::string& prefix,
                                 const std::string& name) {
    switch (o) {
    case owner::room: {
        // and the channel its PUBLISH goes to (SPUBLISH in a cluster)
        std::vector<std::string> k = room_keys(prefix, name);
        k.push_back(room_channel(prefix, name));
        return k;
    }
    case owner::server:
        return server_keys(prefix, name);
    case owner::index:
        return room_index_keys(prefix, name);
    case owner::senders:
        return {room_key(prefix, name, "senders")};
    }
    return {};
}

void expect_one_slot(const std::vector<std::string>& keys,
                     std::string_view what) {
    ASSERT_FALSE(keys.empty()) << what;
    uint16_t slot = key_slot(keys[0]);
    for (const std::string& k : keys) {
        EXPECT_EQ(key_slot(k), slot) << what << ": " << k << " vs " << keys[0];
    }
}

}  // namespace

TEST(KeySlots, EveryScriptIsInTheTable) {
    size_t n = 0;
    for (const lua_script* const* s = all_scripts(); *s != nullptr; s++) {
        bool found = false;
        for (const script_keys& e : script_table()) {
            found = found || e.script == *s;
        }
        EXPECT_TRUE(found) << (*s)->name << ": which keys does it take?";
        n++;
    }
    EXPECT_EQ(n, script_table().size());
}

TEST(KeySlots, EachScriptCallIsInOneSlot) {
    for (const script_keys& e : script_table()) {
        const std::vector<std::string>& names =
            e.keys == owner::server ? servers : codes;
        for (const std::string& prefix : prefixes) {
            for (const std::string& name : names) {
                expect_one_slot(keys_of(e.keys, prefix, name),
                                std::string(e.script->name) + " " + prefix +
                                    name);
            }
        }
    }
}

TEST(KeySlots, RoomsAndServersSpreadOverSlots) {
    // the tag is the room code, the server id, the bucket: not the prefix
    EXPECT_EQ(key_slot(room_keys("p:", "ABCD")[0]), key_slot("ABCD"));
    EXPECT_EQ(key_slot(server_keys("p:", "web-1")[0]), key_slot("web-1"));
    EXPECT_NE(key_slot(room_keys("", "ABCD")[0]),
              key_slot(room_keys("", "ABCE")[0]));
    // the barrier channel is the server's too
    EXPECT_EQ(key_slot(server_key("", "web-1", "barrier")),
              key_slot(server_keys("", "web-1")[0]));
    // GET /rooms reads 16 buckets, each a slot of its own
    std::vector<uint16_t> slots;
    for (unsigned b = 0; b < room_index_buckets; b++) {
        uint16_t s = key_slot(room_index_key("", b));
        for (uint16_t seen : slots) {
            EXPECT_NE(s, seen) << "bucket " << b;
        }
        slots.push_back(s);
    }
    // a room's index keys are in its bucket
    for (const std::string& code : codes) {
        EXPECT_EQ(key_slot(room_index_keys("", code)[0]),
                  key_slot(room_index_key("", room_bucket(code))));
    }
}

TEST(KeySlots, ScriptsBuildNoKeyNames) {
    for (const lua_script* const* s = all_scripts(); *s != nullptr; s++) {
        const std::string& body = (*s)->body;
        for (std::string_view part :
             {"room:{", "server:{", "rooms:{", "prefix", ":alive", ":rooms"}) {
            EXPECT_EQ(body.find(part), std::string::npos)
                << (*s)->name << " names a key itself: " << part;
        }
    }
}

// In a cluster every script that publishes does it with SPUBLISH (the
// room's channel is in its slot, checked above); nothing else changes.
TEST(KeySlots, ShardedScriptsPublishWithSpublish) {
    for (const lua_script* const* s = all_scripts(); *s != nullptr; s++) {
        const lua_script& plain = **s;
        const lua_script& sharded = sharded_script(plain);
        EXPECT_EQ(&sharded, &sharded_script(plain)) << "made once";
        EXPECT_EQ(sharded.body.find("'PUBLISH'"), std::string::npos)
            << plain.name;
        size_t published = 0;
        for (size_t at = plain.body.find("'PUBLISH'");
             at != std::string::npos;
             at = plain.body.find("'PUBLISH'", at + 1)) {
            published++;
        }
        size_t sharded_published = 0;
        for (size_t at = sharded.body.find("'SPUBLISH'");
             at != std::string::npos;
             at = sharded.body.find("'SPUBLISH'", at + 1)) {
            sharded_published++;
        }
        EXPECT_EQ(sharded_published, published) << plain.name;
        EXPECT_EQ(sharded.body.size(), plain.body.size() + published)
            << plain.name;
    }
    EXPECT_NE(script_publish().body.find("'PUBLISH'"), std::string::npos);
}
