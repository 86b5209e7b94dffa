// The account page, live: a profile changed elsewhere (another tab, the API, SQL) shows here at once.
// It speaks Supabase Realtime's protocol (vsn 1.0.0) to /realtime/v1/websocket on this origin; the
// socket is signed in by the page's own session cookie (same origin only), so no token reaches
// this script. Fields being edited are left alone. Without JavaScript the page works as before.
(function () {
  var form = document.getElementById("profile-form");
  if (!form || !form.dataset.liveProfile || !window.WebSocket) return;
  var userId = form.dataset.liveProfile;
  var topic = "realtime:profile-" + userId;
  var status = document.getElementById("live-status");
  var fields = ["full_name", "username", "website"];
  var ref = 0;
  var socket = null;
  var heartbeat = null;
  var retry = 1000;

  function send(event, payload, topicName) {
    ref += 1;
    socket.send(JSON.stringify({ topic: topicName || topic, event: event, payload: payload, ref: String(ref), join_ref: "1" }));
  }

  function showAvatar(path) {
    var current = document.getElementById("avatar-image");
    if (!current || !path) return;
    var size = form.dataset.avatarSize || "160";
    var url = (form.dataset.avatarOrigin || "") + "/storage/v1/render/image/public/avatars/" +
      path.split("/").map(encodeURIComponent).join("/") + "?width=" + size + "&height=" + size + "&resize=cover";
    if (current.tagName === "IMG" && current.getAttribute("src") === url) return;
    var image = document.createElement("img");
    image.id = "avatar-image";
    image.className = "avatar";
    image.width = image.height = Number(size);
    image.alt = "Your profile photo";
    image.src = url;
    current.replaceWith(image);
  }

  function apply(record) {
    fields.forEach(function (name) {
      var input = document.getElementById(name);
      if (!input || !(name in record) || document.activeElement === input || input.value !== input.defaultValue) return;
      input.value = input.defaultValue = record[name] === null ? "" : String(record[name]);
    });
    if ("avatar_url" in record) showAvatar(record.avatar_url);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + "/realtime/v1/websocket?vsn=1.0.0");
    socket.onopen = function () {
      retry = 1000;
      send("phx_join", { config: { postgres_changes: [
        { event: "UPDATE", schema: "public", table: "profiles", filter: "id=eq." + userId },
      ] } });
      heartbeat = setInterval(function () { send("heartbeat", {}, "phoenix"); }, 25000);
    };
    socket.onmessage = function (message) {
      var frame = JSON.parse(message.data);
      if (frame.topic !== topic) return;
      if (frame.event === "phx_reply" && frame.payload.status === "ok" && status) status.hidden = false;
      if (frame.event === "postgres_changes" && frame.payload.data && frame.payload.data.record) apply(frame.payload.data.record);
    };
    socket.onclose = function () {
      clearInterval(heartbeat);
      if (status) status.hidden = true;
      // The session cookie may have expired: loading the page again refreshes it, then reconnect.
      setTimeout(function () {
        fetch("/account", { credentials: "same-origin", cache: "no-store" }).finally(connect);
      }, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  connect();
})();
