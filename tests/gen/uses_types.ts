// Type-checked by tests/gen/test_types.py with `tsc --noEmit` against the generated
// database.types.ts: every line here must compile, and each expectType<...>() pins what
// supabase-js infers from the Database type.
import { createClient } from "@supabase/supabase-js"
import {
  Constants,
  type CompositeTypes,
  type Database,
  type Enums,
  type Json,
  type Tables,
  type TablesInsert,
  type TablesUpdate,
} from "./database.types"

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function expectType<T extends true>(): T | void {}

const supabase = createClient<Database>("http://127.0.0.1:54321", "sb_publishable_x")

export async function reads(): Promise<void> {
  const { data: posts } = await supabase.from("posts").select("id, title, tags, mood, metadata, created_at, views")
  if (posts) {
    const post = posts[0]
    expectType<Equal<typeof post.id, string>>()
    expectType<Equal<typeof post.tags, string[]>>()
    expectType<Equal<typeof post.mood, "happy" | "sad" | "meh">>()
    expectType<Equal<typeof post.metadata, Json | null>>()
    expectType<Equal<typeof post.created_at, string>>()
    expectType<Equal<typeof post.views, number>>()
  }

  // many-to-one embed through posts_author_id_fkey: one object
  const { data: withAuthor } = await supabase.from("posts").select("title, authors(name)").single()
  if (withAuthor) {
    expectType<Equal<typeof withAuthor.authors, { name: string }>>()
  }
  // one-to-many (reverse) embed: an array; one-to-one (reverse, key = primary key): an object or null
  const { data: authors } = await supabase.from("authors").select("name, posts(title), author_bios(bio)")
  if (authors) {
    expectType<Equal<(typeof authors)[number]["posts"], { title: string }[]>>()
    expectType<Equal<(typeof authors)[number]["author_bios"], { bio: string } | null>>()
  }

  const { data: published } = await supabase.from("published_posts").select("*")
  if (published) {
    expectType<Equal<(typeof published)[number]["shout"], string | null>>()
  }

  const { data: notes } = await supabase.schema("extra").from("notes").select("mood")
  if (notes) {
    expectType<Equal<(typeof notes)[number]["mood"], "happy" | "sad" | "meh" | null>>()
  }
}

export async function writes(): Promise<void> {
  await supabase.from("posts").insert({ author_id: 1, title: "only what is required" })
  await supabase.from("posts").insert({
    author_id: 1,
    title: "everything",
    tags: ["a", "b"],
    mood: "happy",
    moods: ["sad", "meh"],
    metadata: { nested: [1, "two", null, { three: true }] },
    home: { street: "1 Main St", city: null, tags: ["home"] },
    score: 4.5,
    "Display Name": "Everything",
  })
  await supabase.from("posts").update({ title: "renamed", body: null }).eq("id", "00000000-0000-0000-0000-000000000000")
  await supabase.from("authors").insert({ name: "identity fills the id" })
  await supabase.from("author_bios").upsert({ author_id: 1, bio: "one per author" })
  await supabase.from("published_posts").update({ title: "through the view" }).eq("author_id", 1)
  await supabase.from("profiles").upsert({ id: "00000000-0000-0000-0000-000000000000", username: "ada" })
  await supabase.schema("extra").from("notes").insert({ id: 1, mood: "meh" })
}

export async function functions(): Promise<void> {
  const { data: sum } = await supabase.rpc("add_numbers", { a: 1 })
  expectType<Equal<typeof sum, number | null>>()

  const { data: happy } = await supabase.rpc("posts_by_mood", { wanted: "happy" }).select("id, title")
  if (happy) {
    expectType<Equal<(typeof happy)[number]["title"], string>>()
  }

  const { data: stats } = await supabase.rpc("author_stats")
  if (stats) {
    expectType<Equal<(typeof stats)[number], { author_id: number; last_post: string; posts: number }>>()
  }

  const { data: echoed } = await supabase.rpc("echo_json", { "": { any: ["json"] } })
  expectType<Equal<typeof echoed, Json | null>>()

  await supabase.rpc("touch_all")
}

export function helpers(): void {
  const row: Tables<"posts"> = {} as Tables<"posts">
  expectType<Equal<typeof row.title_length, number | null>>()
  const insert: TablesInsert<"posts"> = { author_id: 2, title: "helper" }
  const update: TablesUpdate<"authors"> = { name: "renamed" }
  const mood: Enums<"mood"> = "meh"
  const address: CompositeTypes<"address"> = { street: null, city: "Paris", tags: null }
  const note: Tables<{ schema: "extra" }, "notes"> = { id: 1, mood: null, post_id: null }
  const view: Tables<"published_posts"> = {} as Tables<"published_posts">
  expectType<Equal<typeof view.title, string | null>>()
  const labels: readonly Enums<"mood">[] = Constants.public.Enums.mood
  expectType<Equal<typeof Constants.public.Enums.mood, readonly ["happy", "sad", "meh"]>>()
  void [insert, update, mood, address, note, labels]
}
