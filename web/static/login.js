// Returns to the page that sent us here after the login (the server checks it is local).
const next = new URLSearchParams(location.search).get('next');
if (next) document.getElementById('next').value = next;
